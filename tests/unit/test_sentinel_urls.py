"""``sentinel://`` URLs without servers: the form, its errors, and where it is accepted.

The same URL configures the Redis storage (``config_to_storage``, YAML, ``PYWORKFLOW_STORAGE_URL``)
and the Celery broker (``celery_config`` maps it onto kombu's Sentinel transport). The real
thing, with sentinels and failovers, runs in ``tests/storage/test_sentinel.py`` and
``tests/celery/test_sentinel_broker.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

from pyworkflow import configure_from_yaml
from pyworkflow.celery import CelerySettings
from pyworkflow.celery.app import celery_config
from pyworkflow.celery.transport import QoS, SentinelChannel, SentinelTransport
from pyworkflow.config import get_config, get_storage
from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.storage import config_to_storage, storage_to_config
from pyworkflow.storage.redis import RedisStorageBackend
from pyworkflow.utils.sentinel import SentinelURL, parse_sentinel_url
from pyworkflow.utils.urls import redact_url

# -- the form -------------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_master_and_its_database() -> None:
    parsed = parse_sentinel_url(
        "sentinel://app:p%40ss@s1.internal:26380,s2.internal,[::1]:26381/orders/4"
        "?sentinel_password=sp&socket_timeout=2.5"
    )
    assert parsed == SentinelURL(
        sentinels=(("s1.internal", 26380), ("s2.internal", 26379), ("::1", 26381)),
        master_name="orders",
        db=4,
        username="app",
        password="p@ss",
        sentinel_password="sp",
        socket_timeout=2.5,
    )
    assert parsed.addresses() == ["s1.internal:26380", "s2.internal:26379", "[::1]:26381"]


def test_the_database_and_every_password_are_optional() -> None:
    parsed = parse_sentinel_url("SENTINEL://h1:1/mymaster")
    assert (parsed.sentinels, parsed.master_name, parsed.db) == ((("h1", 1),), "mymaster", 0)
    assert parsed.password is None and parsed.sentinel_password is None
    assert parse_sentinel_url("sentinel://h/m?password=pw").password == "pw"
    assert parse_sentinel_url("sentinel://:pw@h/m/").password == "pw"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sentinel://h1:26379,h2:26379", "name the master"),
        ("sentinel://h1:26379/", "name the master"),
        ("sentinel://h1:26379;sentinel://h2:26379", "separate the sentinels with ','"),
        ("sentinel://h1:99999/m", "bad port"),
        ("sentinel://h1:x/m", "bad port"),
        ("sentinel://h1,,h2/m", "needs a host"),
        ("sentinel://h1/m/zero", "the path is"),
        ("sentinel://h1/m/0/extra", "the path is"),
        ("sentinel://h1/m?master=m", "unknown option"),
        ("sentinel://:a@h1/m?password=b", "once"),
        ("sentinel://h1/m?socket_timeout=soon", "socket_timeout"),
        ("redis://h1/0", "sentinel://"),
    ],
)
def test_a_malformed_sentinel_url_is_one_clear_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed Sentinel URL") as refused:
        parse_sentinel_url(url)
    assert reason in str(refused.value)
    assert "sentinel://[:password@]host:26379" in str(refused.value)  # the form, to copy


def test_passwords_never_reach_a_message() -> None:
    url = "sentinel://:s3cret@h1:26379,h2:26379/m?sentinel_password=t0p"
    assert redact_url(url) == "sentinel://:***@h1:26379,h2:26379/m?sentinel_password=***"
    with pytest.raises(ConfigurationError) as refused:
        parse_sentinel_url(url.replace("/m?", "/m/x?"))
    assert "s3cret" not in str(refused.value) and "t0p" not in str(refused.value)


# -- storage --------------------------------------------------------------------------------------


def test_redis_storage_takes_a_sentinel_url_from_every_kind_of_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "sentinel://:pw@s1:26379,s2:26379/mymaster/2"
    for config in ({"type": "redis", "url": url, "prefix": "app"}, {"url": url, "prefix": "app"}):
        backend = config_to_storage(config)
        assert isinstance(backend, RedisStorageBackend)
        assert (backend.url, backend.prefix) == (url, "app")
        assert storage_to_config(backend) == {"type": "redis", "url": url, "prefix": "app"}
        assert "pw" not in repr(backend)

    yaml = tmp_path / "pyworkflow.config.yaml"
    yaml.write_text(f"storage:\n  type: redis\n  url: {url}\n  prefix: yaml\n")
    configure_from_yaml(yaml)
    from_yaml = get_config().storage
    assert isinstance(from_yaml, RedisStorageBackend) and from_yaml.url == url

    monkeypatch.setenv("PYWORKFLOW_STORAGE_URL", url)
    from pyworkflow.config import reset_config

    reset_config()
    from_env = get_storage()
    assert isinstance(from_env, RedisStorageBackend) and from_env.url == url


def test_a_malformed_sentinel_storage_url_is_refused_before_any_connection() -> None:
    with pytest.raises(ConfigurationError, match="malformed Sentinel URL.*name the master"):
        config_to_storage({"url": "sentinel://:pw@s1:26379,s2:26379"})
    with pytest.raises(ConfigurationError, match="malformed Sentinel URL.*bad port"):
        RedisStorageBackend("sentinel://s1:port/mymaster")


# -- the Celery broker ----------------------------------------------------------------------------


def test_a_sentinel_broker_url_becomes_kombu_s_sentinel_transport_and_options() -> None:
    url = "sentinel://:p%3Bw@s1:26379,s2:26380/mymaster/3?sentinel_password=sp"
    conf = celery_config(CelerySettings(broker_url=url, visibility_timeout=90))
    assert conf["broker_url"] == "sentinel://:p%3Bw@s1:26379/3;sentinel://:p%3Bw@s2:26380/3"
    assert conf["broker_transport"] == "pyworkflow.celery.transport:SentinelTransport"
    options = conf["broker_transport_options"]
    assert options["master_name"] == "mymaster"
    # What redis:// brokers get, sentinel:// ones get too.
    plain = celery_config(CelerySettings(broker_url="redis://h:6379/0", visibility_timeout=90))
    for name, value in plain["broker_transport_options"].items():
        assert options[name] == value, name
    sentinels = options["sentinel_kwargs"]
    assert sentinels["password"] == "sp"
    assert sentinels["socket_timeout"] == options["socket_timeout"]
    assert sentinels["retry"].get_retries() == 0  # a silent sentinel is passed over at once

    # kombu reads the master's password and database back, and every sentinel.
    connection = Connection(conf["broker_url"], transport_options=options)
    assert (connection.password, connection.virtual_host) == ("p;w", "3")
    assert connection.alt == conf["broker_url"].split(";")


def test_a_sentinel_url_s_socket_timeout_is_the_broker_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYWORKFLOW_CELERY_BROKER", "sentinel://s1/mymaster?socket_timeout=3")
    settings = CelerySettings.from_config()
    assert settings.broker_url == "sentinel://s1/mymaster?socket_timeout=3"
    options = celery_config(settings)["broker_transport_options"]
    assert options["socket_timeout"] == 3 and options["sentinel_kwargs"]["socket_timeout"] == 3
    assert celery_config(settings)["pyworkflow_broker_url"] == settings.broker_url


def test_a_malformed_sentinel_broker_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="malformed Sentinel URL"):
        celery_config(CelerySettings(broker_url="sentinel://s1:26379;sentinel://s2:26379"))


def test_the_sentinel_transport_keeps_the_redis_transport_s_fix_and_kombu_s_discovery() -> None:
    channel = SentinelTransport.Channel
    assert channel is SentinelChannel
    assert issubclass(SentinelTransport, kombu_redis.SentinelTransport)
    assert channel.QoS is QoS  # the requeue-on-close guard
    assert "_create_client" in vars(channel.__mro__[1])  # one client per pool
    assert channel._get_pool is kombu_redis.SentinelChannel._get_pool  # the master via sentinels
    assert "master_name" in channel.from_transport_options
