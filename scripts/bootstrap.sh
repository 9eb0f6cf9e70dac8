#!/usr/bin/env bash
# Installs what Passerelle needs on a Debian or Ubuntu machine, then its Python environment.
#   scripts/bootstrap.sh demo   - what `passerelle demo` runs: Prosody, ngircd
#   scripts/bootstrap.sh test   - that, plus the servers the end-to-end tests start
# Safe to run again: it installs only what is missing. Uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-demo}
packages=(ca-certificates python3 python3-venv libmagic1 prosody prosody-modules lua-unbound ngircd)
if [ "$mode" = test ]; then
    packages+=(inspircd atheme-services postgresql postfix dovecot-imapd dovecot-lmtpd)
    packages+=(gpgv debian-archive-keyring)  # for fetch_deb.py below
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    # Postfix asks how to configure the system mailer: the tests run their own instance.
    echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Passerelle needs Python 3.11 or newer; python3 is $(python3 --version)" >&2
    exit 1
}

# uv manages the environment from uv.lock. Use the one on PATH, else keep our own copy.
if command -v uv >/dev/null; then
    uv=(uv)
else
    if [ ! -x .tools/bin/uv ]; then
        echo "bootstrap: installing uv into .tools/"
        python3 -m venv .tools
        .tools/bin/pip install -q uv
    fi
    uv=(.tools/bin/uv)
fi
"${uv[@]}" sync --frozen --quiet

if [ "$mode" = test ]; then
    # Ergo, the IRC server with IRCv3 chathistory, is packaged from trixie on: unpacked
    # (not installed) from Debian's signed archive into .tools/debian/ergochat.
    python3 scripts/fetch_deb.py trixie ergochat .tools/debian/ergochat
fi
echo "bootstrap: ready (${uv[*]} run passerelle --help)"
