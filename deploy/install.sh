#!/usr/bin/env bash
# Install or upgrade metascope on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit). Runs ON
# the Pi, as root, from a copy of the project (deploy/push.sh makes one). Safe to run again:
# every step either converges on the same state or is skipped when already done, and the
# user's /etc/metascope/metascope.toml is never overwritten.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo bash deploy/install.sh [--model PATH] [--no-start] [--dry-run]

Installs metascope from this project folder as the systemd service `metascope`:
  apt packages (python3-picamera2 and the rest of what edge/ needs), the system user
  `metascope` (group video, for the camera), a venv at /opt/metascope/venv that sees apt's
  packages, the project with its `edge` extra (numpy kept below 2), the models in
  /opt/metascope/models (both shipped ones: the accurate default and the fast one that
  model.path = "mda231-pc3-fast" picks), /etc/metascope/metascope.toml (only when absent; otherwise the new
  default is written beside it as metascope.toml.new), the unit, enabled and (re)started.

Options:
  --model PATH   install this model (NAME.tflite with NAME.json beside it) instead of the
                 shipped models/mda231-pc3*.tflite, and make the service use it
  --no-start     install and enable, but do not (re)start the service now
  --dry-run      print every step, change nothing (root not needed)
  -h, --help     this help

The service is started without waiting for it to be ready (it is not while the camera is
busy or missing); after at most 30 s this prints what the service says it is doing.

Environment (for tests and image builds): METASCOPE_ROOT=DIR installs under DIR instead of /;
METASCOPE_START_WAIT_S=N waits N seconds for the service instead of 30.
EOF
}

EXIT_FAILED=1 # a copy of edge/errors.py ExitCode.FAILED (tests/test_exit_codes.py): every refusal here

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit $EXIT_FAILED
}

SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${METASCOPE_ROOT:-}
SERVICE=metascope
SERVICE_USER=metascope # the unit runs as this user (User= in systemd/metascope.service)
DEFAULT_MODEL=mda231-pc3   # accurate (edge/paths.py DEFAULT_MODEL_NAME): the service's default
FAST_MODEL=mda231-pc3-fast # fast (FAST_MODEL_NAME): model.path = "mda231-pc3-fast" chooses it
PREFIX=/opt/metascope # paths as the running system sees them; $ROOT is prepended on writes
VENV=$PREFIX/venv
MODELS=$PREFIX/models
CONFIG=/etc/metascope/metascope.toml
UNIT_DIR=/etc/systemd/system
DROP_IN=$UNIT_DIR/$SERVICE.service.d/model.conf
START_WAIT_S=${METASCOPE_START_WAIT_S:-30}
APT_PACKAGES=(
    python3-picamera2 # from apt only: it needs libcamera
    # The IPA modules and camera tuning files: only a Recommends of libcamera in Debian-lineage
    # packaging until 2025-09, which --no-install-recommends leaves out; without a tuning file
    # libcamera registers no camera ("no camera found", whatever the cable).
    libcamera-ipa
    python3-venv
    python3-numpy # 1.24, what picamera2 is built against; pip keeps it (constraints-pi.txt)
    python3-pil
    python3-scipy # edge/cells/detect labels objects with scipy.ndimage; apt's build saves a pip build
    rsync         # deploy/push.sh and deploy/pull.sh copy with it
)

model="" dry_run=0 start=1
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --model)
        if [ $# -lt 2 ] || [ -z "$2" ]; then die "--model needs a path to a .tflite file"; fi
        model=$2
        # A relative path starting with '-' would reach basename, install... as options.
        case $model in -*) model=./$model ;; esac
        shift 2
        ;;
    --no-start)
        start=0
        shift
        ;;
    --dry-run)
        dry_run=1
        shift
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

step() {
    printf '==> %s\n' "$*"
}

# Print a command, then run it unless this is a dry run.
run() {
    printf '  +'
    printf ' %q' "$@"
    printf '\n'
    [ $dry_run -eq 1 ] || "$@"
}

# What the service is doing, after the restart job: running, still starting (its STATUS= line:
# waiting for the camera...) after START_WAIT_S, or failed (exit). The job is queued before
# `systemctl restart --no-block` returns, so while it is listed the start is not over.
report_service() {
    local waited=0 state status
    while [ -n "$(systemctl list-jobs --no-legend "$SERVICE.service" 2>/dev/null)" ] && [ "$waited" -lt "$START_WAIT_S" ]; do
        sleep 1
        waited=$((waited + 1))
    done
    state=$(systemctl is-active "$SERVICE.service" 2>/dev/null) || true
    status=$(systemctl show --property=StatusText --value "$SERVICE.service" 2>/dev/null) || true
    case $state in
    active) printf '  the service is running: %s\n' "${status:-no status line}" ;;
    activating | reloading) printf '  the service is starting: %s\n' "${status:-no status line yet}" ;;
    *) die "the service did not start ($state); see: journalctl -u $SERVICE -n 50 --no-pager" ;;
    esac
}

# Write TEXT to FILE (printed the same way as run's commands).
write_file() {
    printf '  + write %q\n' "$1"
    printf '%s\n' "$2" | sed 's/^/      /'
    [ $dry_run -eq 1 ] || printf '%s\n' "$2" >"$1"
}

# --- check everything before changing anything --------------------------------------------
# Only 64-bit Raspberry Pi OS has wheels for the interpreter (ai-edge-litert: aarch64 only) and
# what it needs; on 32-bit (armhf) pip would fail much later, halfway through. Checked first, and
# only when installing into this system: METASCOPE_ROOT (an image being built) may be for another
# one, and a dry run (on a desktop, to read the steps) only says so.
if [ -z "$ROOT" ]; then
    arch=$(dpkg --print-architecture 2>/dev/null || echo unknown)
    if [ "$arch" != arm64 ]; then
        wrong_arch="this system is $arch; metascope needs 64-bit Raspberry Pi OS Bookworm (arm64): \
no interpreter wheels exist for $arch. Flash the 64-bit image (Raspberry Pi Imager: Raspberry Pi OS (64-bit))"
        [ $dry_run -eq 1 ] || die "$wrong_arch"
        printf '  (dry run; a real install would stop here: %s)\n' "$wrong_arch"
    fi
fi
if [ $dry_run -eq 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "must run as root: sudo bash deploy/install.sh (or --dry-run to see the steps)"
fi
for file in pyproject.toml README.md deploy/constraints-pi.txt systemd/$SERVICE.service systemd/$SERVICE.example.toml; do
    [ -f "$SOURCE/$file" ] || die "$SOURCE/$file is missing: run this from a complete copy of the project"
done
if [ -z "$model" ]; then
    models=("$SOURCE/models/$DEFAULT_MODEL.tflite" "$SOURCE/models/$FAST_MODEL.tflite")
    [ -f "${models[0]}" ] || die "no default model at ${models[0]}: pass --model PATH (a .tflite with its .json card)"
    [ -f "${models[1]}" ] || die "no fast model at ${models[1]}: pass --model PATH (a .tflite with its .json card)"
else
    models=("$model")
fi
command -v python3 >/dev/null || die "python3 is missing (Raspberry Pi OS ships it)"
for index in "${!models[@]}"; do
    model=${models[$index]}
    case $model in
    *.tflite) ;;
    *) die "--model $model: expected a .tflite file" ;;
    esac
    [ -f "$model" ] || die "--model $model: no such file"
    # The name ends up in a systemd drop-in (Environment=): a space would split it, a newline
    # or % could add directives or specifiers. Only names that need no quoting anywhere.
    case $(basename -- "$model") in
    *[!A-Za-z0-9._+-]*) die "--model: the model file name '$(basename -- "$model")' may only hold letters, digits and . _ + - (rename it)" ;;
    esac
    model=$(cd -- "$(dirname -- "$model")" && pwd)/$(basename -- "$model")
    models[index]=$model
    card=${model%.tflite}.json
    [ -f "$card" ] || die "$model has no model card beside it ($card)"
    # The service would refuse a model whose sha256 is not its card's; say so before installing.
    python3 - "$model" "$card" <<'EOF' || exit $EXIT_FAILED
import hashlib, json, sys
model, card = sys.argv[1], sys.argv[2]
try:
    recorded = json.load(open(card, encoding="utf-8"))["sha256"]
except (OSError, ValueError, KeyError, TypeError) as exc:
    sys.exit(f"install.sh: {card} is not a usable model card ({exc})")
actual = hashlib.sha256(open(model, "rb").read()).hexdigest()
if actual != recorded:
    sys.exit(f"install.sh: {model} does not match its card: sha256 {actual}, card says {recorded}")
EOF
done
# The model the service runs: the default, or the one --model named.
model_name=$(basename "${models[0]}" .tflite)

[ $dry_run -eq 0 ] || printf 'Dry run: these are the steps; nothing is changed.\n'

step "apt packages"
run apt-get update -q
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
if [ $dry_run -eq 0 ]; then
    # libcamera-ipa's tuning files (vc4: Pi 4, pisp: Pi 5), or a libcamera built from source.
    tuning=$(compgen -G "$ROOT/usr/share/libcamera/ipa/rpi/*/*.json" ||
        compgen -G "$ROOT/usr/local/share/libcamera/ipa/rpi/*/*.json") ||
        die "no camera tuning file under $ROOT/usr/share/libcamera/ipa/rpi after the apt install: libcamera would find no camera. Install libcamera-ipa (apt-get install libcamera-ipa) and run this again"
    printf '  camera tuning files: %s in %s\n' "$(printf '%s\n' "$tuning" | wc -l)" "$(dirname "$(dirname "$(printf '%s\n' "$tuning" | head -n 1)")")"
fi

step "system user $SERVICE_USER (group video: the camera)"
if getent passwd "$SERVICE_USER" >/dev/null; then
    run usermod --append --groups video "$SERVICE_USER"
else
    run useradd --system --user-group --groups video --home-dir /var/lib/$SERVICE \
        --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# The unit's UMask=0027 keeps results from other users: the person who installs (sudo from
# their login) joins the metascope group, so their `metascope status` and pull.sh read them.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$SUDO_USER" != "$SERVICE_USER" ]; then
    run usermod --append --groups "$SERVICE_USER" "$SUDO_USER"
fi

step "folders"
run install -d -m 0755 "$ROOT$PREFIX" "$ROOT$MODELS" "$ROOT/etc/metascope"
run mkdir -p "$ROOT$UNIT_DIR" "$ROOT/usr/local/bin"

step "virtualenv $VENV (sees apt's picamera2 and numpy)"
if [ -x "$ROOT$VENV/bin/python" ]; then
    printf '  (exists: reused)\n'
else
    run python3 -m venv --system-site-packages "$ROOT$VENV"
fi

step "metascope with the edge extra, numpy kept below 2"
# pip builds in the project folder; setuptools would pack modules left in an old build/lib
# (deleted from the project since) into the new wheel.
run rm -rf "$SOURCE/build"
# A local folder is always rebuilt and reinstalled, so this is also the upgrade.
run "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --constraint "$SOURCE/deploy/constraints-pi.txt" "${SOURCE}[edge]"
# People who SSH in can type `metascope status`; pull.sh finds it on PATH.
run ln -sfn "$VENV/bin/metascope" "$ROOT/usr/local/bin/metascope"
# The unit's Documentation= points here.
run install -m 0644 "$SOURCE/README.md" "$ROOT$PREFIX/README.md"

for model in "${models[@]}"; do
    name=$(basename "$model" .tflite)
    step "model $name"
    run install -m 0644 "$model" "$ROOT$MODELS/$name.tflite"
    run install -m 0644 "${model%.tflite}.json" "$ROOT$MODELS/$name.json"
done
if [ "$model_name" != "$DEFAULT_MODEL" ]; then
    # The service finds the default name by itself; another one it is told through
    # METASCOPE_MODEL (a model.path in metascope.toml still wins).
    run mkdir -p "$ROOT$(dirname "$DROP_IN")"
    write_file "$ROOT$DROP_IN" "# Written by deploy/install.sh --model: the model the service uses.
[Service]
Environment=METASCOPE_MODEL=$MODELS/$model_name.tflite"
elif [ -e "$ROOT$DROP_IN" ]; then
    run rm -f "$ROOT$DROP_IN"
fi

step "configuration $CONFIG"
if [ ! -e "$ROOT$CONFIG" ]; then
    run install -m 0644 "$SOURCE/systemd/$SERVICE.example.toml" "$ROOT$CONFIG"
elif cmp -s "$SOURCE/systemd/$SERVICE.example.toml" "$ROOT$CONFIG"; then
    printf '  (unchanged default: kept)\n'
else
    printf '  (yours: kept; the new default goes beside it, compare with diff)\n'
    run install -m 0644 "$SOURCE/systemd/$SERVICE.example.toml" "$ROOT$CONFIG.new"
fi

step "systemd unit $SERVICE.service"
run install -m 0644 "$SOURCE/systemd/$SERVICE.service" "$ROOT$UNIT_DIR/$SERVICE.service"
run systemctl daemon-reload
run systemctl enable "$SERVICE.service"
if [ $start -eq 1 ]; then
    # Repeated installs must not trip the unit's start limit (StartLimitBurst).
    run systemctl reset-failed "$SERVICE.service" || true
    # Type=notify: a plain restart returns only once the service sends READY=1, which it does
    # after the camera opens; a busy or missing camera is waited for (the service extends its
    # start timeout meanwhile), so the install would never end. Start it, then wait a bounded time.
    if ! run systemctl restart --no-block "$SERVICE.service"; then
        die "the service did not start; see: journalctl -u $SERVICE -n 50 --no-pager"
    fi
    [ $dry_run -eq 1 ] || report_service
fi

cat <<EOF
Done.
  follow the log:   journalctl -u $SERVICE -f
  service state:    systemctl status $SERVICE
  what it sees:     metascope status
  settings:         $CONFIG (then: sudo systemctl restart $SERVICE)
EOF
