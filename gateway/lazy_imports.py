"""Keep out of a network process the modules slidge imports at start-up but seldom uses.

slidge 0.4.2 imports, at module level, things most Passerelle processes use rarely or
never: Pillow (avatars and image thumbnails), ``thumbhash``, ``qrcode`` (a QR code for
an ``add-device`` style link) and alembic with mako (database migrations, run once at
start-up). Together with pygments (only for slixmpp's test helper) they are ~20 MiB of
each child's ~100 MiB. :func:`install`, called by :mod:`gateway.child` before slidge is
imported, changes *when* they load, never what they do:

- :data:`LAZY` modules are put in ``sys.modules`` as a :class:`LazyModule` stand-in; the
  first attribute read (``qrcode.make``, ``Image.open``) imports the real module, once,
  under a lock (slidge reads images in a thread pool), and the stand-in forwards to it
  from then on. ``from PIL.Image import Image, open`` (``slidge.db.avatar``) gets
  :data:`_FORWARDERS` instead: a function and a class that load Pillow when called or
  inspected, and answer ``isinstance`` with ``False`` while Pillow is not loaded (no
  object can be a Pillow image before then).
- ``slidge.migration`` is replaced by :func:`migrate`, which runs slidge's own migration
  in a forked process that exits afterwards, so alembic and mako never enter the
  long-lived one; a failed migration ends the process with slidge's exit code 1.
- pygments is hidden while slixmpp is imported: slixmpp then logs stanzas without
  terminal colours in its test helper, the only place that uses them.

``bench/memory.py`` measures the result; ``tests/unit/test_lazy_imports.py`` shows each
lazy module still loads and works on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

LAZY = ("qrcode", "thumbhash", "PIL.Image", "PIL.ImageOps")
"""Modules loaded on first attribute use instead of when imported."""

_lock = threading.RLock()
_loaded: set[str] = set()
"""Lazy names whose real import has begun: the finder lets them through from then on."""
_real: dict[str, types.ModuleType] = {}
"""Lazy names whose real module is fully imported."""


def real_module(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its stand-in was.

    Other threads asking meanwhile wait for the import to finish, so the module runs once
    and nobody sees it half-initialised.
    """
    module = _real.get(name)
    if module is None:
        with _lock:
            module = _real.get(name)
            if module is None:
                _loaded.add(name)
                if isinstance(sys.modules.get(name), LazyModule):
                    del sys.modules[name]
                module = _real[name] = importlib.import_module(name)
    return module


class LazyModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is used."""

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes the stand-in lacks. The import system probes
        # dunders while it sets the stand-in up (before it is in sys.modules), and
        # ``__path__`` on every ``from X import y``: a plain module has none, and saying
        # so must not load it.
        spec = self.__dict__.get("__spec__")
        if attr == "__path__" and spec is not None and spec.submodule_search_locations:
            # Importing a submodule reads the package's path, then sets the submodule as
            # an attribute of the package: that (see __setattr__) loads the package.
            # Loading it here instead would make importlib import the submodule twice.
            return spec.submodule_search_locations
        if attr.startswith("__") and (
            attr == "__path__" or sys.modules.get(self.__name__) is not self
        ):
            raise AttributeError(attr)
        forwarder = _FORWARDERS.get((self.__name__, attr))
        if forwarder is not None and self.__name__ not in _loaded:
            return forwarder
        return getattr(real_module(self.__name__), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr.startswith("__") and attr.endswith("__"):  # set by the import system
            super().__setattr__(attr, value)
        else:
            setattr(real_module(self.__name__), attr, value)

    def __dir__(self) -> list[str]:
        return dir(real_module(self.__name__))


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return LazyModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__.pop("__path__", None)  # see LazyModule.__getattr__


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Answers for :data:`LAZY` names with a stand-in, once the real module is known to exist."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names or fullname in _loaded:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None:
            return None  # let the import fail as it would have
        spec = importlib.machinery.ModuleSpec(fullname, _StandInLoader(), origin=real.origin)
        spec.submodule_search_locations = real.submodule_search_locations
        return spec


def _pil_open(fp: Any, mode: str = "r", formats: Any = None) -> Any:
    """``PIL.Image.open``, loading Pillow first."""
    return real_module("PIL.Image").open(fp, mode, formats)


class _RealClassMeta(type):
    """Forwards class-level use to ``PIL.Image.Image``; see the module docstring."""

    def _real(cls) -> type:
        real: type = real_module("PIL.Image").Image
        return real

    def __instancecheck__(cls, instance: Any) -> bool:
        return "PIL.Image" in _loaded and isinstance(instance, cls._real())

    def __subclasscheck__(cls, subclass: type) -> bool:
        return "PIL.Image" in _loaded and issubclass(subclass, cls._real())

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):  # probes by typing and inspect: not a use of Pillow
            raise AttributeError(attr)
        return getattr(cls._real(), attr)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)


class _PilImage(metaclass=_RealClassMeta):
    """``PIL.Image.Image`` for modules that imported it before Pillow was loaded."""


_FORWARDERS: dict[tuple[str, str], Any] = {
    ("PIL.Image", "open"): _pil_open,
    ("PIL.Image", "Image"): _PilImage,
}
"""Names taken with ``from LAZY_MODULE import name`` that need not load it yet."""


class Forked:
    """A forked process running a ``work`` function (:func:`start_forked`)."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self._read_fd = read_fd

    def result(self) -> bytes:
        """Wait for the fork; what ``work`` returned. Its ``SystemExit`` code, 1 after any
        other exception (printed) and 1 after a signal, ends this process too."""
        with os.fdopen(self._read_fd, "rb") as pipe:
            data = pipe.read()  # until the fork exits (or closes its end)
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(1 if code < 0 else code)
        return data


def start_forked(work: Callable[[], bytes]) -> Forked:
    """Run ``work`` in a forked process that exits afterwards; this process goes on
    meanwhile, until :meth:`Forked.result`. What ``work`` imports dies with the fork.
    Used for slidge's migrations here and by :mod:`gateway.child` to validate the
    configuration; call it while this process has no other thread."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the forked process; its result is the exit code)
        os.close(read_fd)
        code = 1
        try:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            result = work()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(result)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # report anything, then leave the fork
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    return Forked(pid, read_fd)


def run_forked(work: Callable[[], bytes]) -> bytes:
    """:func:`start_forked`, waited for at once."""
    return start_forked(work).result()


def migrate() -> None:
    """slidge's ``migrate()``, in a forked process, so alembic stays out of this one."""

    def work() -> bytes:
        _real_migration().migrate()  # exits 1 itself after printing what went wrong
        return b""

    run_forked(work)


def _real_migration() -> types.ModuleType:
    """slidge's own ``slidge.migration`` module, loaded from its file (forked process only)."""
    spec = importlib.util.find_spec("slidge")
    assert spec is not None and spec.submodule_search_locations
    path = os.path.join(spec.submodule_search_locations[0], "migration.py")
    real_spec = importlib.util.spec_from_file_location("slidge.migration", path)
    assert real_spec is not None and real_spec.loader is not None
    module = importlib.util.module_from_spec(real_spec)
    sys.modules["slidge.migration"] = module
    real_spec.loader.exec_module(module)
    return module


def _migration_stand_in() -> types.ModuleType:
    module = types.ModuleType("slidge.migration", "slidge's migrations, run in a fork.")
    module.migrate = migrate  # type: ignore[attr-defined]
    return module


def _without_pygments(import_: Callable[[], object]) -> None:
    saved = sys.modules.get("pygments", ...)
    # None in sys.modules makes "import pygments" raise ImportError.
    sys.modules["pygments"] = None  # type: ignore[assignment]
    try:
        import_()
    finally:
        if saved is ...:
            del sys.modules["pygments"]
        else:
            sys.modules["pygments"] = saved


def install(names: Sequence[str] = LAZY) -> None:
    """Make ``names`` lazy, fork the migrations, import slixmpp without pygments.

    Call before anything imports slidge; calling it again does nothing. Called too late
    (one of them already imported), it warns and changes nothing: the process then works
    as before, only larger.
    """
    if any(isinstance(f, _LazyFinder) for f in sys.meta_path):
        return
    already = [n for n in (*names, "slidge.migration", "slixmpp") if n in sys.modules]
    if already:
        log.warning("lazy imports not installed: %s already imported (a bug of ours)", already)
        return
    sys.meta_path.insert(0, _LazyFinder(names))
    sys.modules["slidge.migration"] = _migration_stand_in()
    _without_pygments(lambda: importlib.import_module("slixmpp"))
