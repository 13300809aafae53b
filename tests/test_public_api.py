"""The public surface: exactly what __all__ says, and the sans-IO core without trio."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import statesession
import statesession.protocol
import statesession.sockets
import statesession.testing

PUBLIC = {
    "Backoff",
    "Channel",
    "ChannelBrokenError",
    "ChannelClosedError",
    "ChannelError",
    "CleanupItem",
    "CleanupReport",
    "Client",
    "ClientStatistics",
    "ConfigError",
    "FrameTooLargeError",
    "LifecycleError",
    "ManagerStatistics",
    "Message",
    "MessageTooLargeError",
    "Outcome",
    "ProtocolError",
    "RemoteError",
    "ResumeGapError",
    "Session",
    "SessionChart",
    "SessionClosedError",
    "SessionConfig",
    "SessionManager",
    "SessionStatistics",
    "StateSessionError",
    "open_store",
    "StoreVersionError",
    "StoreError",
    "StoreStatistics",
    "Snapshot",
    "SessionStore",
    "SessionRecord",
    "MemoryStore",
    "LogEntry",
    "CorruptSnapshotError",
    "Transport",
    "TransportError",
    "load_transport",
    "open_client",
    "open_manager",
    "serve",
}


def test_public_all_is_exactly_the_public_surface() -> None:
    assert set(statesession.__all__) == PUBLIC
    for name in statesession.__all__:
        obj = getattr(statesession, name)
        assert obj.__module__.startswith("statesession._"), name
    public_modules = {n for n in dir(statesession) if not n.startswith("_")}
    assert public_modules == PUBLIC


def test_public_namespaces_only_reexport() -> None:
    """Public modules beside the package only re-export names whose code lives in a
    private module."""
    for module in (statesession.testing, statesession.protocol, statesession.sockets):
        assert {n for n in vars(module) if not n.startswith("_")} == set(module.__all__)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or inspect.isfunction(obj):
                assert any(p.startswith("_") for p in obj.__module__.split(".")[1:]), name


def test_public_unknown_attribute_is_an_attribute_error() -> None:
    try:
        statesession.nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_public_exceptions_form_one_tree() -> None:
    for name in statesession.__all__:
        obj = getattr(statesession, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, statesession.StateSessionError), name


def test_sans_io_core_imports_no_trio() -> None:
    """Every module of the sans-IO core and of the lifecycle imports without trio."""
    code = textwrap.dedent(
        """
        import sys
        import statesession
        from statesession import SessionChart, SessionConfig, ProtocolError, Channel
        import statesession.protocol
        import importlib, pkgutil
        import statesession._core, statesession._lifecycle
        for package in (statesession._core, statesession._lifecycle):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                importlib.import_module(info.name)
        statesession._lifecycle.interpreters.ChartLifecycle()
        statesession._lifecycle.interpreters.Lifecycle()
        assert "trio" not in sys.modules, sorted(m for m in sys.modules if "trio" in m)
        statesession.open_manager
        assert "trio" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
