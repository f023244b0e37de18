#!/usr/bin/env bash
# Copy this project to a Pi and install or upgrade metascope there (deploy/install.sh).
set -euo pipefail

PROG=push.sh
EXIT_FAILED=1 EXIT_USAGE=2 EXIT_UNREACHABLE=7 # copies of edge/errors.py ExitCode (tests/test_exit_codes.py)

usage() {
    cat <<'EOF'
Usage: deploy/push.sh HOST [options]

Copies this project to HOST (rsync over ssh, without virtualenvs (any folder holding pyvenv.cfg),
what git ignores (build output, caches), var/, data or .git), runs
deploy/install.sh there with sudo, and prints the service's status.

HOST is anything ssh accepts (a ~/.ssh/config alias, name, address, or user@host); user,
port and key come from your ssh config or the options below. The user needs sudo on HOST
(you are asked for the password when the Pi wants one).

Options:
  --model PATH       install this model (NAME.tflite with NAME.json beside it) instead of
                     the default models/mda231-pc3.tflite
  --remote-dir DIR   where the copy goes on HOST, relative to the login's home or absolute
                     (default: metascope-deploy). It is a mirror: files not in the project
                     are deleted there.
  --dry-run          copy, then have install.sh print its steps without changing anything
  -F FILE            ssh config file (passed to ssh)
  -o OPTION          ssh option, e.g. -o Port=2222 (repeatable; passed to ssh)
  -i FILE            ssh identity file (passed to ssh)
  -p PORT            ssh port (passed to ssh)
  -h, --help         this help

Exit status (edge/errors.py ExitCode): 0 installed and running, or still starting (waiting
for the camera: what it says is printed); 1 the install or the service failed; 2 bad arguments; 7 HOST unreachable over ssh, or the connection was lost.
EOF
}

SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/ssh_common.sh
. "$SOURCE/deploy/ssh_common.sh"
host="" model="" remote_dir=metascope-deploy dry_run=0
ssh_opts=()
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --model | --remote-dir | -F | -o | -i | -p)
        if [ $# -lt 2 ] || [ -z "$2" ]; then die $EXIT_USAGE "$1 needs a value (see --help)"; fi
        case $1 in
        --model) model=$2 ;;
        --remote-dir) remote_dir=$2 ;;
        *) ssh_opts+=("$1" "$2") ;;
        esac
        shift 2
        ;;
    --dry-run)
        dry_run=1
        shift
        ;;
    -*) die $EXIT_USAGE "unknown option $1 (see --help)" ;;
    *)
        [ -z "$host" ] || die $EXIT_USAGE "only one HOST, got '$host' and '$1'"
        host=$1
        shift
        ;;
    esac
done
[ -n "$host" ] || die $EXIT_USAGE "no HOST given (see --help)"
# A relative path starting with '-' would reach rsync, basename... as options (rsync -e runs a
# command): ./ makes it a path. HOST cannot start with '-' (refused as an unknown option above).
case $model in -*) model=./$model ;; esac
# The copy is made with --delete, so it may only ever go into a folder push.sh made: the Pi
# resolves --remote-dir (no spelling gets past that: ./., metascope-deploy/.., /var/lib...)
# and the folder must carry push's mark, be new, or be empty (then it is marked).
[ -n "${remote_dir%/}" ] || die $EXIT_USAGE "--remote-dir: refusing to mirror into that folder (files there would be deleted)"
if [ -n "$model" ]; then
    case $model in *.tflite) ;; *) die $EXIT_USAGE "--model $model: expected a .tflite file" ;; esac
    [ -f "$model" ] || die $EXIT_USAGE "--model $model: no such file"
    [ -f "${model%.tflite}.json" ] || die $EXIT_USAGE "--model $model: its card ${model%.tflite}.json is missing"
    # install.sh on the Pi refuses any other name (it goes into a systemd drop-in): say so before copying.
    case $(basename -- "$model") in
    *[!A-Za-z0-9._+-]*) die $EXIT_USAGE "--model: the model file name '$(basename -- "$model")' may only hold letters, digits and . _ + - (rename it)" ;;
    esac
fi

make_ssh_cmd ${ssh_opts[@]+"${ssh_opts[@]}"}

# Ask ssh itself first: when ssh cannot connect, rsync reports either ssh's 255 or its own
# protocol error (12), depending on timing.
if ! reply=$("${ssh_cmd[@]}" "$host" true 2>&1 </dev/null); then
    die $EXIT_UNREACHABLE "cannot reach $host over ssh: ${reply:-no message}"
fi

# On the host: make or check the folder, print where it really is. An earlier push.sh made
# folders without the mark: one holding this project's push.sh and pyproject.toml is taken, but
# never one holding .git (a push leaves .git out): that is a clone, README offers cloning.
# shellcheck disable=SC2016 # expanded by the shell on the host, not here
claim='d=$(realpath -m -- "$1") || exit 20; mark=$d/.metascope-push
if [ ! -e "$d" ]; then mkdir -p "$d" || exit 20; : >"$mark"
elif [ ! -d "$d" ]; then exit 21
elif [ ! -f "$mark" ]; then
    if [ -z "$(ls -A "$d")" ]; then : >"$mark"
    elif [ -e "$d/.git" ]; then exit 23
    elif [ -f "$d/deploy/push.sh" ] && grep -qs "^name = \"metascope\"" "$d/pyproject.toml"; then : >"$mark"
    else exit 22; fi
fi
cd "$d" && pwd -P'
status=0
resolved=$("${ssh_cmd[@]}" "$host" "sh -c $(sh_quote "$claim") claim $(sh_quote "$remote_dir")" </dev/null) || status=$?
case $status in
0) ;;
21) die $EXIT_USAGE "--remote-dir $remote_dir: it is a file on $host, not a folder" ;;
22) die $EXIT_USAGE "--remote-dir $remote_dir: that folder on $host was not made by push.sh and is not empty; refusing to mirror into it (files there would be deleted)" ;;
23) die $EXIT_USAGE "--remote-dir $remote_dir: $remote_dir on $host is a git clone (it holds .git), not a copy push.sh made; mirroring would delete its untracked files and undo its edits. Push to another --remote-dir (the default is metascope-deploy), or remove the clone first if nothing in it is needed: ssh $host rm -rf $(sh_quote "$remote_dir")" ;;
255) die $EXIT_UNREACHABLE "lost the connection to $host" ;;
*) die $EXIT_FAILED "cannot make $remote_dir on $host (exit $status)" ;;
esac
remote_dir=$resolved

# Left behind whatever their names: every virtualenv (a folder holding pyvenv.cfg) and, in a git
# checkout, what git ignores (build output, caches); the fixed list below covers a plain copy.
left_out=()
while IFS= read -r -d '' cfg; do
    cfg=${cfg#"$SOURCE"}
    left_out+=("--exclude=${cfg%/pyvenv.cfg}/")
done < <(find "$SOURCE" -path "$SOURCE/.git" -prune -o -name pyvenv.cfg -type f -print0)
if git -C "$SOURCE" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    while IFS= read -r -d '' ignored; do
        left_out+=("--exclude=/$ignored")
    done < <(git -C "$SOURCE" ls-files -z --others --ignored --exclude-standard --directory)
fi

printf '==> copying %s to %s:%s\n' "$SOURCE" "$host" "$remote_dir"
status=0
# /.git without a slash: in a git worktree (git worktree add) .git is a file, not a folder.
rsync -rlptz --delete --exclude=/.metascope-push -e "$rsh" ${left_out[@]+"${left_out[@]}"} \
    --exclude=/.git --exclude=/.venv/ --exclude=/venv/ --exclude=/var/ --exclude=/data/ \
    --exclude=/build/ --exclude=/dist/ --exclude=/results/ --exclude=/bench/results/ \
    --exclude=__pycache__/ --exclude='*.pyc' --exclude=.pytest_cache/ --exclude=.ruff_cache/ \
    --exclude=.mypy_cache/ --exclude=.hypothesis/ --exclude='*.egg-info/' \
    "$SOURCE/" "$host:$remote_dir/" || status=$?
case $status in
0) ;;
255) die $EXIT_UNREACHABLE "cannot reach $host over ssh" ;;
*) die $EXIT_FAILED "copying the project to $host failed (rsync exit $status)" ;;
esac

install_args=()
if [ -n "$model" ]; then
    # Beside the project copy, inside the mirror: the next push removes it again.
    rsync -t -e "$rsh" -- "$model" "${model%.tflite}.json" "$host:$remote_dir/.pushed-model/" ||
        die $EXIT_FAILED "copying $model to $host failed"
    install_args+=(--model ".pushed-model/$(basename -- "$model")")
fi
[ $dry_run -eq 0 ] || install_args+=(--dry-run)
quoted_args=""
for word in ${install_args[@]+"${install_args[@]}"}; do quoted_args+=" $(sh_quote "$word")"; done

# sudo may ask for a password: give it a terminal when we have one. A dry run needs no root.
tty_opt=()
[ ! -t 0 ] || tty_opt=(-t)
# shellcheck disable=SC2016 # expanded by the shell on the host, not here
sudo_cmd='if [ "$(id -u)" -eq 0 ]; then bash deploy/install.sh "$@"; else sudo bash deploy/install.sh "$@"; fi'
# shellcheck disable=SC2016
[ $dry_run -eq 0 ] || sudo_cmd='bash deploy/install.sh "$@"'
printf '==> installing on %s\n' "$host"
status=0
"${ssh_cmd[@]}" ${tty_opt[@]+"${tty_opt[@]}"} "$host" \
    "cd $(sh_quote "$remote_dir") && set --$quoted_args && $sudo_cmd" || status=$?
case $status in
0) ;;
255) die $EXIT_UNREACHABLE "lost the connection to $host during the install" ;;
*) die $EXIT_FAILED "install.sh failed on $host (exit $status); see its output above" ;;
esac
[ $dry_run -eq 0 ] || exit 0

printf '==> service status on %s\n' "$host"
# systemctl status exits 3 while the unit is still activating (a Type=notify service waiting for
# the camera): what the unit is doing decides, not that exit status.
"${ssh_cmd[@]}" "$host" "systemctl --no-pager --lines=15 status metascope" </dev/null || true
state_cmd='systemctl is-active metascope; systemctl show --property=StatusText --value metascope'
state=$("${ssh_cmd[@]}" "$host" "$state_cmd" </dev/null) || true
status_line=$(printf '%s\n' "$state" | sed -n 2p)
case $(printf '%s\n' "$state" | sed -n 1p) in
active) ;;
activating | reloading)
    printf '%s: the service on %s is starting: %s (follow it: ssh %s journalctl -u metascope -f)\n' \
        "$PROG" "$host" "${status_line:-no status line yet}" "$host"
    ;;
*) die $EXIT_FAILED "the metascope service on $host is not running; see: ssh $host journalctl -u metascope -n 50" ;;
esac
