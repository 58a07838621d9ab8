#!/usr/bin/env bash
# Debian packages the test suite runs for real: Prometheus (scrapes a worker's
# /metrics; promtool checks the alert rules) and Alertmanager (receives the
# alert router's notifications; amtool checks the routing example), the
# libraries WeasyPrint loads and the Hangul font for the semiannual report's PDF,
# poppler-utils (pdftotext, pdftoppm) that its tests read the PDF with, and
# chromium, the real browser the console's tests drive headless (Playwright).
# Installs what is missing, once; a no-op when everything is there.
set -euo pipefail

want=(prometheus:/usr/bin/prometheus prometheus:/usr/bin/promtool
      prometheus-alertmanager:/usr/bin/prometheus-alertmanager prometheus-alertmanager:/usr/bin/amtool
      poppler-utils:/usr/bin/pdftotext poppler-utils:/usr/bin/pdftoppm
      fonts-noto-cjk:/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
      chromium:/usr/bin/chromium
      libpango-1.0-0:- libpangoft2-1.0-0:- libharfbuzz-subset0:-)
missing=()
for pair in "${want[@]}"; do
  pkg=${pair%%:*} bin=${pair#*:}
  if [[ $bin == - ]]; then  # a library: asked of dpkg, its path depends on the architecture
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  else
    [[ -e "$bin" ]] || missing+=("$pkg")
  fi
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
sudo=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "debian-packages.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start their services where systemd runs; tests start their own.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  "${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
