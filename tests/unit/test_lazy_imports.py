"""gateway.lazy_imports: what a network process leaves unloaded, and that each lazy module
still loads and works the first time it is used.

Each check runs in a fresh interpreter (the test process has imported slidge already), the
way ``gateway.child`` does it: ``install()`` first, then slidge.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = """
import sys
from gateway import lazy_imports
lazy_imports.install()
import slidge, slidge.main
from gateway.lazy_imports import LazyModule

def real(name):
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, LazyModule)
"""


def python(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "check.py"
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
        check=False,
    )


def run(code: str, tmp_path: Path) -> str:
    done = python(PRELUDE + textwrap.dedent(code), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_slidge_imports_leave_the_rarely_used_modules_out(tmp_path: Path) -> None:
    out = run(
        """
        import examples.echo.gateway
        names = ("PIL.Image", "PIL.ImageOps", "qrcode", "thumbhash", "alembic", "mako",
                 "pygments")
        print(sorted(n for n in names if real(n)))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"


def test_avatar_functions_load_pillow_on_first_use(tmp_path: Path) -> None:
    out = run(
        """
        import io
        from slidge.db import avatar
        assert not real("PIL.Image")
        assert not isinstance(object(), avatar.Image)  # answered without loading Pillow
        assert not real("PIL.Image")

        png = io.BytesIO()
        import PIL
        from PIL import Image  # the stand-in still
        Image.new("RGB", (3, 2), "red").save(png, "PNG")  # first use: loads Pillow
        assert real("PIL.Image")
        img = avatar.open_image(io.BytesIO(png.getvalue()))
        assert isinstance(img, avatar.Image), type(img)
        assert issubclass(type(img), avatar.Image)
        print(img.size, img.getpixel((0, 0)), PIL.Image is sys.modules["PIL.Image"])
        """,
        tmp_path,
    )
    assert out.split() == ["(3,", "2)", "(255,", "0,", "0)", "True"]


def test_thumbhash_and_exif_transpose_work_from_slidges_attachment_code(tmp_path: Path) -> None:
    out = run(
        """
        import io
        from PIL import Image
        from slidge.core.mixins import attachment
        from slidge.util.types import LegacyAttachment
        assert not real("PIL.ImageOps") and not real("thumbhash")

        png = io.BytesIO()
        Image.new("RGB", (40, 30), "blue").save(png, "PNG")
        hash_, width, height = attachment.get_thumbhash(LegacyAttachment(data=png.getvalue()))
        print(width, height, real("thumbhash"), real("PIL.ImageOps"), len(hash_) > 0)
        """,
        tmp_path,
    )
    assert out.split() == ["40", "30", "True", "True", "True"]


def test_qrcode_loads_on_first_use_with_its_submodules(tmp_path: Path) -> None:
    out = run(
        """
        import slidge.command.register  # holds the stand-in, as slidge does
        assert not real("qrcode")
        import qrcode.image.pil  # a submodule first: loads the package once
        img = slidge.command.register.qrcode.make("xmpp:someone@example.org")
        print(type(img).__name__, real("qrcode"), img.size[0] > 20)
        """,
        tmp_path,
    )
    assert out.split() == ["PilImage", "True", "True"]


def test_a_lazy_module_is_executed_once_when_threads_race_for_it(tmp_path: Path) -> None:
    (tmp_path / "counted.py").write_text(
        "import time\nimport builtins\n"
        "builtins.counted_runs = getattr(builtins, 'counted_runs', 0) + 1\n"
        "time.sleep(0.2)\nVALUE = 42\n",
        encoding="utf-8",
    )
    out = run(
        f"""
        import builtins, threading
        sys.path.insert(0, {str(tmp_path)!r})
        sys.meta_path.insert(0, lazy_imports._LazyFinder(["counted"]))
        import counted
        assert not real("counted")
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(counted.VALUE)) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join(30)
        print(builtins.counted_runs, seen)
        """,
        tmp_path,
    )
    assert out.strip() == "1 [42, 42, 42, 42, 42, 42, 42, 42]"


def test_migrations_run_in_a_fork_and_alembic_stays_out(tmp_path: Path) -> None:
    out = run(
        f"""
        import sqlite3
        from slidge.core import config
        config.DB_URL = "sqlite:///{tmp_path}/slidge.sqlite"
        slidge.main.migrate()
        tables = sqlite3.connect("{tmp_path}/slidge.sqlite").execute(
            "select name from sqlite_master where type='table'").fetchall()
        print(real("alembic"), ("user_account",) in tables, ("alembic_version",) in tables)
        """,
        tmp_path,
    )
    assert out.split()[-3:] == ["False", "True", "True"]


def test_a_failed_migration_ends_the_process_with_slidges_code(tmp_path: Path) -> None:
    done = python(
        PRELUDE + "from slidge.core import config\n"
        f"config.DB_URL = 'sqlite:///{tmp_path}/missing/dir/slidge.sqlite'\n"
        "slidge.main.migrate()\nprint('not reached')\n",
        tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not reached" not in done.stdout
    assert "Something went wrong during the migration" in done.stdout


def test_install_called_too_late_warns_and_changes_nothing(tmp_path: Path) -> None:
    done = python(
        "import logging, sys\nimport slixmpp\nfrom gateway import lazy_imports\n"
        "lazy_imports.install()\nimport slidge\n"
        "print(type(sys.modules['PIL.Image']).__name__, type(sys.modules['alembic']).__name__)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["module", "module"]
    assert "lazy imports not installed: ['slixmpp'] already imported" in done.stderr


@pytest.mark.parametrize("attr", ["__path__", "__wrapped__"])
def test_probing_a_plain_lazy_module_does_not_load_it(attr: str, tmp_path: Path) -> None:
    out = run(
        f"""
        from slidge.core.mixins import message_maker
        print(hasattr(message_maker.Image, {attr!r}), real("PIL.Image"))
        """,
        tmp_path,
    )
    # __wrapped__ is a real attribute lookup: it loads Pillow, which has no such name.
    expected = "False False" if attr == "__path__" else "False True"
    assert out.strip() == expected


def test_slidge_uses_the_pillow_forwarders_only_as_they_allow() -> None:
    """Detector: ``slidge.db.avatar`` takes ``Image`` and ``open`` from ``PIL.Image`` before
    Pillow loads, so it gets :data:`gateway.lazy_imports._FORWARDERS`. They stand in for
    annotations, ``isinstance`` and calls; if slidge starts subclassing ``Image`` or using
    either name another way, this fails: check the forwarders still fit."""
    import ast

    import slidge.db.avatar

    tree = ast.parse(Path(slidge.db.avatar.__file__).read_text(encoding="utf-8"))
    annotations = {
        id(node)
        for parent in ast.walk(tree)
        for field in ("annotation", "returns")
        if isinstance(getattr(parent, field, None), ast.AST)
        for node in ast.walk(getattr(parent, field))
    }
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    uses = [
        n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("Image", "open_image")
    ]
    assert uses  # the detector sees them
    for name in uses:
        allowed = annotations if name.id == "Image" else calls
        assert id(name) in allowed, f"line {name.lineno}: {name.id} used another way"
