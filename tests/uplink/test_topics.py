"""The uplink topic tree: built by the Pi, matched by the server's subscription, parsed back by the server."""

import pytest
from paho.mqtt.client import topic_matches_sub

from phaseuplink import records, topics
from phaseuplink.errors import TopicError, UplinkError


def test_topics_of_a_transformer_share_its_prefix():
    assert topics.topic_for("feeder-12", "tx-0457", "reading") == "phasekit/feeder-12/tx-0457/reading"
    assert topics.prefix("feeder-12", "tx-0457") == "phasekit/feeder-12/tx-0457"
    assert topics.status_topic("feeder-12", "tx-0457") == "phasekit/feeder-12/tx-0457/status"
    assert topics.topic_for("s", "t", "frame", 12) == "phasekit/s/t/frame/12"


def test_an_id_that_is_not_one_topic_level_is_refused():
    for site in ("", "a/b", "a+", "#", "x#y"):
        with pytest.raises(TopicError, match="topic level"):
            topics.topic_for(site, "t", "reading")
        with pytest.raises(TopicError):
            topics.prefix("s", site)
    # Callers that caught the ValueError of before still catch it.
    assert issubclass(TopicError, UplinkError) and issubclass(TopicError, ValueError)


def test_the_servers_subscription_matches_every_topic_the_pi_publishes_and_parse_reads_it_back():
    kinds = records.KINDS + (topics.STATUS_KIND, topics.COMMAND_KIND)
    for kind in kinds:
        t = topics.topic_for("feeder-12", "tx-0457", kind)
        assert topic_matches_sub(topics.SUBSCRIPTION, t), t  # paho's own matcher, as the broker matches
        assert topics.parse(t) == ("feeder-12", "tx-0457", kind)


def test_parse_refuses_topics_outside_the_tree():
    for bad in (
        "not/ours",
        "phasekit/s/t",
        "phasekit/s/t/reading/extra",
        "other/s/t/reading",
        "phasekit//t/reading",
        "phasekit/s/t/",
        "",
    ):
        with pytest.raises(TopicError, match="is not phasekit/<site>/<transformer>/<kind>"):
            topics.parse(bad)
    with pytest.raises(TopicError, match="must be a str"):
        topics.parse(b"phasekit/s/t/reading")


def test_parse_quotes_a_long_topic_truncated():
    long = "x/" * 5000
    with pytest.raises(TopicError) as e:
        topics.parse(long)
    assert len(str(e.value)) < 200 and "..." in str(e.value)


def test_parse_leaves_the_kind_to_the_caller():
    # The server decides what it does with a kind it does not know (it counts an invalid batch).
    assert topics.parse("phasekit/s/t/gossip") == ("s", "t", "gossip")
