"""The public surface: exactly what __all__ says, and the sans-IO core without trio."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import types

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
    "SessionObserver",
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
    """Once every lazy name is loaded, the module's own namespace holds no public name
    beyond __all__ except its public submodules, and each name in __all__ is an object
    defined in a private module whose namespace holds it under that name."""
    assert set(statesession.__all__) == PUBLIC
    for name in statesession.__all__:
        getattr(statesession, name)
    namespace = vars(statesession)
    public = {n: v for n, v in namespace.items() if not n.startswith("_")}
    for name, value in public.items():
        if isinstance(value, types.ModuleType):
            assert value.__name__ == f"statesession.{name}", name
    assert {n for n, v in public.items() if not isinstance(v, types.ModuleType)} == PUBLIC
    assert set(dir(statesession)) == PUBLIC
    for name in PUBLIC:
        obj = namespace[name]
        assert obj.__name__ == name
        home = obj.__module__
        assert home.startswith("statesession."), name
        assert any(part.startswith("_") for part in home.split(".")[1:]), name
        assert vars(sys.modules[home]).get(name) is obj, name


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
    """An unknown statesession attribute raises AttributeError naming it."""
    try:
        statesession.nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_public_exceptions_form_one_tree() -> None:
    """Every exception statesession exports is a StateSessionError."""
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
