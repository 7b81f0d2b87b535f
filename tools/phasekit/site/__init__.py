"""A simulated transformer site: every tier's real code on one machine, on one clock faster than real time.

``phasekit site run`` (``phasekit.commands.site``) is the front; the modules here:

- ``run``: the orchestration (``SiteRun``, ``SiteOptions``): set-up, the day, the end;
- ``clock``: the one site clock and its form for each tier;
- ``nodes``: the houses' nodes (phasenode in process, the virtual board);
- ``physics``: the street's loads on the phases the relays really hold, the meters;
- ``services``: the broker, the server, the transformer Pi's files and processes;
- ``operator``: genuine and forged operator commands;
- ``faults``: the fault plan and its file format;
- ``accounting``: the witnesses of where every reading went;
- ``report``: the summary, its JSON and the plot.

docs/site.md explains the design; docs/first-hour.md is the tour for a newcomer.
"""
