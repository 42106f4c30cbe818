#!/usr/bin/env bash
# Installs AI Egress Auditor and everything its tests need on a fresh Debian machine (as root,
# or with sudo): tshark/tcpdump/openssl for captures and weak-TLS servers, iproute2/iptables for
# the network-namespace tests, rsyslog for the syslog sink tests, chromium (headless) to open
# the HTML report in a browser, then the Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
DEB_PACKAGES="tshark tcpdump openssl curl iproute2 iptables rsyslog dnsmasq-base dnsutils chromium"
missing=""
for p in $DEB_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture: answer no, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
