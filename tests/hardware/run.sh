#!/usr/bin/env bash
# The real-camera checks (tests/hardware/test_real_camera.py) on a Raspberry Pi where
# deploy/install.sh has installed metascope. One command, on the Pi:
#   sudo bash ~/metascope-deploy/tests/hardware/run.sh [pytest options]
# The checks open the camera themselves, so the service is stopped while they run and
# started again afterwards if it was running. The last check runs the installed unit.
set -euo pipefail

VENV_PYTHON=/opt/metascope/venv/bin/python
PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (it stops and starts the service): sudo bash $0"
[ -x "$VENV_PYTHON" ] || die "metascope is not installed: sudo bash $PROJECT/deploy/install.sh first"
# The venv sees apt's packages: pytest from apt is enough, nothing goes into the venv.
"$VENV_PYTHON" -c 'import pytest' 2>/dev/null || apt-get install -y -q --no-install-recommends python3-pytest

was_active=0
if systemctl is-active --quiet metascope; then was_active=1; fi
restore() {
    if [ "$was_active" -eq 1 ]; then systemctl start metascope; fi
}
trap restore EXIT
systemctl stop metascope

cd "$PROJECT"
METASCOPE_HARDWARE=1 "$VENV_PYTHON" -m pytest -q -s -p no:cacheprovider -m hardware tests/hardware "$@"
