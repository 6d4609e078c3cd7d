"""supervisord.conf: the repository's file is the renderer's output and supervisord accepts it."""

from __future__ import annotations

from pathlib import Path

from supervisor.options import EventListenerPoolConfig, ServerOptions

from bmsbank import config, supervisor

ROOT = Path(__file__).resolve().parent.parent


def test_root_supervisord_conf_matches_the_example_config():
    cfg = config.load(str(ROOT / "config.example.toml"))
    expected = supervisor.render_installation(cfg)
    assert (ROOT / "supervisord.conf").read_text() == expected, (
        "regenerate: bmsbank supervisor-config config.example.toml "
        "--python /opt/bmsbank/.venv/bin/python --config-path /etc/bmsbank/bmsbank.toml "
        "> supervisord.conf"
    )


def test_supervisord_parses_it_with_one_poller_per_process(tmp_path):
    cfg = config.load(str(ROOT / "config.example.toml"))
    # supervisord checks that log directories exist: point them at tmp_path.
    text = (ROOT / "supervisord.conf").read_text().replace("/var/log/bmsbank", str(tmp_path))
    text = text.replace(cfg.runtime_dir, str(tmp_path))
    conf = tmp_path / "supervisord.conf"
    conf.write_text(text)
    options = ServerOptions()
    options.realize(["-c", str(conf)])
    names = sorted(g.name for g in options.process_group_configs)
    services = ["arbiter", "publisher"] + [f"poller-{p}" for p in cfg.processes()]
    assert names == sorted([*services, "watchdog"])
    for group in options.process_group_configs:
        proc = group.process_configs[0]
        assert proc.autorestart is not False and proc.startretries >= 100
        if group.name == "watchdog":
            # an event listener fed TICK_5, watching every service, logging to stderr only
            assert isinstance(group, EventListenerPoolConfig)
            assert [e.__name__ for e in group.pool_events] == ["Tick5Event"]
            assert "-m bmsbank.watchdog" in proc.command
            watched = proc.command.split("--program ")[1:]
            assert sorted(w.strip() for w in watched) == sorted(services)
            assert not proc.redirect_stderr and proc.stderr_logfile.endswith("watchdog.log")
        else:
            assert "-m bmsbank.services." in proc.command
