#!/usr/bin/env bash
# Debian packages the end-to-end tests use: ffmpeg (a real player) and chromium (a real
# browser), an emoji font for the browser's screenshots, nftables for the network-namespace
# tests, coturn for the TURN tests, nginx for the TLS proxy test and espeak-ng for test speech. Installed through apt-get when run as root and
# missing; otherwise explained.
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
[ -x /usr/bin/chromium ] || need+=(chromium)
# The stage decodes speakers with the system libopus (loss concealment and FEC).
ldconfig -p 2>/dev/null | grep -q "libopus.so.0" || need+=(libopus0)
# Emoji in the web app's screenshots (reactions) need a colour emoji font.
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# Network namespace tests (tests/netlab.py): loss, partitions and NAT rules.
command -v nft >/dev/null 2>&1 || need+=(nftables)
# The web player's unit tests run player.js under node: they must never skip for want of it.
command -v node >/dev/null 2>&1 || need+=(nodejs)
# A real TURN server for the ICE tests (started by the tests, never as a service).
command -v turnserver >/dev/null 2>&1 || need+=(coturn)
# The TLS reverse-proxy test runs docs/deploy/nginx.conf under nginx (never as a service).
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
# Test speech for the listening-quality harness (tests/quality.py, bench/quality).
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing ${need[*]}: install them (sudo apt-get install ${need[*]}); the tests that need them will fail" >&2
fi
