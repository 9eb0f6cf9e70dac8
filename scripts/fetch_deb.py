"""Unpack one package of another Debian release into a folder, checked end to end.

    python3 scripts/fetch_deb.py SUITE PACKAGE DEST      e.g. trixie ergochat .tools/debian/ergochat

For test servers that bookworm lacks (the Ergo IRC server, whose IRCv3 `chathistory` no
bookworm server offers): the package is unpacked under DEST, not installed, so the
machine's own packages are untouched. Nothing is trusted unchecked: the suite's
`InRelease` must carry a good signature from a key in the machine's Debian archive
keyring (`gpgv`), the package index must match the SHA-256 that file gives, and the
`.deb` the SHA-256 the index gives. DEST/.fetched records what was unpacked; when it
names the same file, nothing is downloaded. The package's dependencies are not fetched:
use it for self-contained programs (a Go server needs only libc).
Standard library only: bootstrap.sh runs it before the project's environment exists.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

MIRROR = os.environ.get("PASSERELLE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TIMEOUT = 60.0


class FetchError(Exception):
    pass


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - http(s) mirror
            data: bytes = answer.read()
            return data
    except OSError as e:
        raise FetchError(f"could not download {url}: {e}") from e


def verified_release(suite: str) -> str:
    """The suite's InRelease text, once gpgv has found its signature good."""
    signed = download(f"{MIRROR}/dists/{suite}/InRelease")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "InRelease")
        path.write_bytes(signed)
        gpgv = ["gpgv", "--keyring", str(KEYRING), "--output", "-", str(path)]
        check = subprocess.run(  # noqa: S603 - fixed argv
            gpgv,
            capture_output=True,
            check=False,
        )
    if check.returncode != 0:
        raise FetchError(
            f"the signature of {suite}'s InRelease is not good with {KEYRING}:\n"
            + check.stderr.decode(errors="replace")
        )
    return check.stdout.decode()


def sha256_of(release: str, name: str) -> tuple[str, int]:
    """The SHA-256 and size the Release text gives for `name` (e.g. main/binary-amd64/...)."""
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.strip() == "SHA256:"
            continue
        fields = line.split()
        if in_sha256 and len(fields) == 3 and fields[2] == name:
            return fields[0], int(fields[1])
    raise FetchError(f"the Release file lists no {name}")


def checked(data: bytes, sha256: str, what: str) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise FetchError(f"{what}: SHA-256 {got}, expected {sha256}")
    return data


def stanza(index: str, package: str) -> dict[str, str]:
    """The fields of `package` in a Packages index."""
    for block in index.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") == package:
            return fields
    raise FetchError(f"no package {package} in the index")


def fetch(suite: str, package: str, dest: Path) -> str:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"],  # noqa: S607 - dpkg's own, on PATH
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    release = verified_release(suite)
    name = f"main/binary-{arch}/Packages.xz"
    digest, _ = sha256_of(release, name)
    index = lzma.decompress(checked(download(f"{MIRROR}/dists/{suite}/{name}"), digest, name))
    fields = stanza(index.decode(), package)
    filename, deb_digest = fields["Filename"], fields["SHA256"]
    stamp = dest / ".fetched"
    if stamp.is_file() and stamp.read_text().split() == [filename, deb_digest]:
        return f"{package} {fields['Version']} already in {dest}"
    deb = checked(download(f"{MIRROR}/{filename}"), deb_digest, filename)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        path = Path(tmp, "package.deb")
        path.write_bytes(deb)
        tree = Path(tmp, "tree")
        subprocess.run(["dpkg-deb", "-x", str(path), str(tree)], check=True)  # noqa: S603, S607
        Path(tree, ".fetched").write_text(f"{filename} {deb_digest}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tree.rename(dest)
    return f"{package} {fields['Version']} unpacked in {dest}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    suite, package, dest = argv
    target = Path(dest).absolute()
    if (target / ".fetched").is_file() and os.environ.get("PASSERELLE_REFETCH") != "1":
        print(f"fetch_deb: {package} already in {dest} (PASSERELLE_REFETCH=1 checks again)")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        print("fetch_deb:", fetch(suite, package, target))
    except (FetchError, KeyError, subprocess.CalledProcessError) as e:
        print(f"fetch_deb: {suite}/{package}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
