"""The [alarms] and [notify] tables: checked in server.toml with errors naming file, line and key, the notify
combinations cross-checked, secrets read from files, and every key documented in docs/server.md."""

from pathlib import Path

import pytest

from phaseserver import config
from phaseserver.alarms import settings as alarm_settings
from phaseserver.errors import ConfigError
from phaseserver.notify import settings as notify_settings
from phaseserver.notify.settings import NotifySettings

ROOT = Path(__file__).resolve().parents[2]
HEAD = '[ingest]\nsource = "none"\n'


def _load(tmp_path, body):
    p = tmp_path / "server.toml"
    p.write_text(HEAD + body)
    return config.load(p)


@pytest.mark.parametrize(
    "body,where,what",
    [
        ("[alarms]\nnode_gap_s = 0\n", ":4: [alarms] node_gap_s", "expected 1..86400"),
        ('[alarms]\nratings = { "s1" = 250 }\n', ":4: [alarms] ratings", 'is not "site/transformer"'),
        ("[alarms]\nhysteresis = 1.5\n", ":4: [alarms] hysteresis", "fraction"),
        ("[alarms]\nnode_gap = 5\n", ":4: [alarms] unknown key 'node_gap'", "known:"),
        ('[notify]\nmin_severity = "loud"\n', ":4: [notify] min_severity", "one of"),
        ('[notify]\nemail_to = ["a b@c"]\n', ":4: [notify] email_to", "not one e-mail address"),
        ('[notify]\nwebhook_url = "ftp://x"\n', ":4: [notify] webhook_url", "http"),
        ('[notify]\nemail_host = "smtp.example.org"\nemail_from = "a@b.c"\n', ":4: [notify] email_host", "recipient"),
        ('[notify]\nwebhook_url = "https://h.example/x"\n', ":4: [notify] webhook_url", "secret"),
        (
            '[notify]\nemail_host = "h"\nemail_from = "a@b.c"\nemail_to = ["o@b.c"]\nemail_username = "u"\n'
            'email_password_file = "pw"\nemail_security = "none"\n',
            ":9: [notify] email_security",
            "in clear",
        ),
    ],
)
def test_bad_settings_name_file_line_and_key(tmp_path, body, where, what):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, body)
    assert where in str(e.value) and what in str(e.value), str(e.value)


def test_good_settings_and_secrets_from_files(tmp_path):
    (tmp_path / "hook.secret").write_text("s3cret-of-the-hook\n")
    (tmp_path / "smtp.pw").write_text("pw\nignored second line\n")
    cfg = _load(
        tmp_path,
        '[alarms]\nnode_gap_s = 90\nratings = { "s1/t1" = 250 }\n'
        '[notify]\nemail_host = "smtp.example.org"\nemail_from = "phasekit@example.org"\nemail_to = ["o@example.org"]\n'
        'email_username = "alarms"\nemail_password_file = "smtp.pw"\n'
        'webhook_url = "https://hooks.example.org/x"\nwebhook_secret_file = "hook.secret"\n',
    )
    a = alarm_settings.AlarmSettings.from_table(cfg.table("alarms"))
    assert a.node_gap_s == 90 and a.rating("s1", "t1") == 250 and a.rating("s1", "t2") == 0
    n = NotifySettings.from_table(
        cfg.table("notify"), secret=lambda k: cfg.secret("notify", k), resolve=lambda p: str(cfg.resolve(p))
    )
    assert n.email_password == "pw" and n.webhook_secret == b"s3cret-of-the-hook" and n.min_severity_level == 2
    # An empty file gives the defaults.
    d = alarm_settings.AlarmSettings.from_table(_load(tmp_path, "").table("alarms"))
    assert d.node_gap_s == 120 and d.lora_report_s * d.lora_reports == 900 and d.enabled


def test_every_key_is_documented():
    text = (ROOT / "docs" / "server.md").read_text()
    for schema, table in ((alarm_settings.SCHEMA, "alarms"), (notify_settings.SCHEMA, "notify")):
        section = text[text.index("### `[%s]` keys" % table) :]
        for key in schema:
            assert "| `%s` |" % key in section, (table, key)
