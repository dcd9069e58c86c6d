#!/usr/bin/env bash
# Install the Debian packages that the tests and the demo use, if any is missing.
# Checks with dpkg-query first, so a machine that has them all needs no network and
# no root; runs `apt-get update` once, and only when something has to be installed.
# Works without a terminal (CI): no prompts, no questions from debconf.
set -euo pipefail

packages=(
    multimon-ng                 # independent DTMF decoder for leak tests
    libspandsp2                 # spandsp's dtmf_rx: a second independent decoder
    libspandsp-dev
    sox                         # multimon-ng reads WAV through sox
    espeak-ng                   # synthetic speech for talk-off tests
    asterisk-core-sounds-en-wav # real recorded speech for talk-off tests
    kamailio                    # the SIP proxy that drives us over NG (rtpengine module)
    sip-tester                  # SIPp: caller and callee for the Kamailio test
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
echo "Installing Debian packages: ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" </dev/null
