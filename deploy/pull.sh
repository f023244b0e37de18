#!/usr/bin/env bash
# Pull a metascope Pi's results to this machine, incrementally, over ssh.
#
# Every row pulled lands in DEST/HOST/results.sqlite (deploy/pull_store.py), keyed by the Pi's
# database id, an epoch and the row id, so a Pi that was re-flashed or reinstalled (its ids start
# again at 1) never mixes its rows with the old ones; each database's CSV files, snapshots and
# crops are in DEST/HOST/<database id>/. For cells (one row per cell), views (one per model call)
# and frames it asks the Pi for the rows after the highest id already held
# (`metascope export --after-id N`): repeated pulls add only new rows, with no duplicates and no
# gaps, and cost what is new, not what is held. deploy/pull_merge.py decides where rows go and
# appends them in one transaction, checking every row as it streams in (ids whole, in range and
# increasing), so a pull that fails half way, or a host that sends garbage, changes nothing.
set -euo pipefail

PROG=pull.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/ssh_common.sh
. "$HERE/ssh_common.sh"
# Copies of edge/errors.py ExitCode (tests/test_exit_codes.py holds them to it).
EXIT_FAILED=1 EXIT_USAGE=2 EXIT_UNREACHABLE=7 EXIT_NOT_INSTALLED=8 EXIT_BAD_EXPORT=9 EXIT_COPY_FAILED=10
EXIT_PULL_TARGET_UNUSABLE=12

usage() {
    cat <<'EOF'
Usage: deploy/pull.sh HOST [options]

Pull results from the metascope Pi HOST into DEST/HOST/: results.sqlite holds every row pulled;
DEST/HOST/<database id>/ holds the CSV files written from it (cells.csv: one row per cell;
views.csv: one row per view, a model call on a cell; frames.csv, runs.csv), snapshots/ and
crops/ (the masked crop of each cell, named in cells.csv); DEST/HOST/CURRENT names the folder of
the Pi's present database. Run it as often as you like: each pull appends only the rows that are
new since the last one, and costs what is new, not what is held. Several Pis can be pulled into
the same DEST. A folder pulled by an earlier version of this script is carried over on the first
pull, with a message.

HOST is anything ssh accepts (a ~/.ssh/config alias, name, address, or user@host); user,
port and key come from your ssh config or the options below. Use key authentication: a pull
makes several ssh connections.

Options:
  --dest DIR             where to keep pulled results (default: $METASCOPE_PULL_DEST or ./results)
  --since ISO8601        only cells last seen, and views and frames captured, at or after this
                         time (runs are always pulled in full, they describe the cells)
  --remote-command CMD   the metascope command on HOST, as a shell command
                         (default: $METASCOPE_REMOTE_COMMAND, else `metascope` on HOST's PATH,
                         else /opt/metascope/venv/bin/metascope)
  --remote-config PATH   the config file metascope reads on HOST (default:
                         $METASCOPE_REMOTE_CONFIG, else its own: /etc/metascope/metascope.toml)
  --snapshots DIR        HOST's snapshots folder (default: the one `metascope status` names)
  --no-snapshots         do not copy snapshots
  --no-crops             do not copy the cells' crops
  --timeout SECONDS      the longest each step on HOST (status, each table's export, each copy)
                         may take (default: $METASCOPE_PULL_TIMEOUT, else 3600); a step that
                         takes longer is ended, on both sides, and the pull fails with exit 9
                         (10 for a copy), so a stuck Pi never holds later pulls up
  --no-csv               do not write the CSV files (results.sqlite only); write them later with
                         python3 deploy/pull_merge.py csv DEST/HOST
  --into URL             land the rows in a PostgreSQL database instead of DEST: a libpq URL,
                         postgresql://USER@HOST:PORT/DB, or postgresql://USER@/DB?host=/socket/dir&port=N
                         for a local socket (a password: ~/.pgpass or $PGPASSWORD, not the URL).
                         Each row lands once, keyed by host, database id, epoch and id, however
                         many desktops pull the same rig at once; the schema is made on first use
                         (or by the owner: see README, Many rigs). Runs deploy/pull_postgres.py with
                         $METASCOPE_PYTHON, a python with metascope's postgres extra (psycopg), e.g.
                         METASCOPE_PYTHON=/path/to/metascope/.venv/bin/python
  --crops-dir DIR        with --into: where snapshots and crops go, DIR/HOST/<database id>/
                         (needed unless --no-snapshots and --no-crops)
  -F FILE                ssh config file (passed to ssh)
  -o OPTION              ssh option, e.g. -o Port=2222 (repeatable; passed to ssh)
  -i FILE                ssh identity file (passed to ssh)
  -p PORT                ssh port (passed to ssh)
  -h, --help             this help

Exit status (edge/errors.py ExitCode): 0 pulled; 2 bad arguments; 7 HOST unreachable over ssh;
8 metascope is not installed on HOST; 9 the export on HOST failed or sent something unusable
(the database is missing or unreadable...); 10 copying snapshots or crops failed; 1 anything
else (a local file problem); 12 DEST cannot be used (named: not a folder, not writable, a damaged
results.sqlite), or the --into database (named: $METASCOPE_PYTHON unset or without psycopg, the
server refused, a schema this role cannot make).
EOF
}

host="" dest="${METASCOPE_PULL_DEST:-results}" since="" snapshots="" step_timeout="${METASCOPE_PULL_TIMEOUT:-3600}"
remote_command="${METASCOPE_REMOTE_COMMAND:-}" remote_config="${METASCOPE_REMOTE_CONFIG:-}" copy_snapshots=1
copy_crops=1 write_csv=1 into="" crops_dir=""
ssh_opts=()
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --dest | --since | --remote-command | --remote-config | --snapshots | --timeout | --into | --crops-dir | -F | -o | -i | -p)
        if [ $# -lt 2 ] || [ -z "$2" ]; then die $EXIT_USAGE "$1 needs a value (see --help)"; fi
        case $1 in
        --dest) dest=$2 ;;
        --since) since=$2 ;;
        --remote-command) remote_command=$2 ;;
        --remote-config) remote_config=$2 ;;
        --snapshots) snapshots=$2 ;;
        --timeout) step_timeout=$2 ;;
        --into) into=$2 ;;
        --crops-dir) crops_dir=$2 ;;
        *) ssh_opts+=("$1" "$2") ;;
        esac
        shift 2
        ;;
    --no-snapshots)
        copy_snapshots=0
        shift
        ;;
    --no-crops)
        copy_crops=0
        shift
        ;;
    --no-csv)
        write_csv=0
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
# A relative DEST starting with '-' would reach mkdir, mktemp, rsync and pull_merge.py as an
# option (rsync -e runs a command): ./ makes it a path. HOST cannot start with '-' (see above).
case $dest in -*) dest=./$dest ;; esac
case $crops_dir in -*) crops_dir=./$crops_dir ;; esac
# ASCII digits only, 1 to 86400 (a [0-9] class could match other digits in some locales).
case $step_timeout in
*[!0123456789]* | "" | 0*) die $EXIT_USAGE "--timeout '$step_timeout' is not a whole number of seconds (1 to 86400)" ;;
esac
if [ ${#step_timeout} -gt 5 ] || [ "$step_timeout" -gt 86400 ]; then
    die $EXIT_USAGE "--timeout $step_timeout is over a day (86400 s)"
fi

# pull_merge.py answers in lines (the database folder, then the tables): a path with a newline
# cannot pass through them. A tab can (a legal, if odd, folder name).
case $dest in
*$'\n'* | *$'\r'*) die $EXIT_PULL_TARGET_UNUSABLE "--dest $(printf %q "$dest") holds a newline or carriage return: pull into a folder whose path has none" ;;
esac
case $crops_dir in
*$'\n'* | *$'\r'*) die $EXIT_PULL_TARGET_UNUSABLE "--crops-dir $(printf %q "$crops_dir") holds a newline or carriage return: name a folder whose path has none" ;;
esac
if [ -n "$into" ]; then
    case $into in
    postgresql://* | postgres://*) ;;
    *) die $EXIT_USAGE "--into takes a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), not '$into'" ;;
    esac
    if [ -z "$crops_dir" ] && { [ $copy_snapshots -eq 1 ] || [ $copy_crops -eq 1 ]; }; then
        die $EXIT_USAGE "--into needs --crops-dir DIR for the snapshots and crops (or --no-snapshots --no-crops)"
    fi
    [ -n "${METASCOPE_PYTHON:-}" ] ||
        die $EXIT_PULL_TARGET_UNUSABLE "--into needs \$METASCOPE_PYTHON: the python of a virtualenv with metascope's postgres extra (psycopg), e.g. METASCOPE_PYTHON=/path/to/metascope/.venv/bin/python"
    "$METASCOPE_PYTHON" -c 'import psycopg' 2>/dev/null ||
        die $EXIT_PULL_TARGET_UNUSABLE "\$METASCOPE_PYTHON ($METASCOPE_PYTHON) cannot import psycopg: install metascope's postgres extra there (pip install 'metascope[postgres]')"
elif [ -n "$crops_dir" ]; then
    die $EXIT_USAGE "--crops-dir goes with --into (a folder pull keeps crops in DEST/HOST/)"
fi

# One folder per microscope, named after the host without any user@.
host_name=${host##*@}
case $host_name in
"" | . | .. | */*) die $EXIT_USAGE "HOST '$host' does not make a usable folder name" ;;
esac
# With --into, the rows go to PostgreSQL and this folder only gets the snapshots and crops; the
# work folder is a private temporary one.
if [ -n "$into" ]; then
    host_dir=${crops_dir:-.}/$host_name
else
    host_dir=$dest/$host_name
fi
new_host=0
if [ -z "$into" ]; then
    [ -d "$host_dir" ] || new_host=1
    mkdir -p "$host_dir" || die $EXIT_PULL_TARGET_UNUSABLE "cannot create $host_dir"
fi

make_ssh_cmd ${ssh_opts[@]+"${ssh_opts[@]}"}
command -v python3 >/dev/null || die $EXIT_FAILED "python3 is needed on this machine (deploy/pull_merge.py merges the rows)"
command -v timeout >/dev/null || die $EXIT_FAILED "timeout (coreutils) is needed on this machine (it bounds each step)"

if [ -n "$remote_command" ]; then
    remote_prefix=$remote_command
else
    # A non-interactive ssh session's PATH does not include the venv, hence the fallback.
    # shellcheck disable=SC2016 # expanded by the shell on the host, not here
    remote_prefix='"$(command -v metascope || echo /opt/metascope/venv/bin/metascope)"'
fi
config_arg=""
[ -z "$remote_config" ] || config_arg=" --config $(sh_quote "$remote_config")"

if [ -n "$into" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/metascope-pull.XXXXXX") || die $EXIT_FAILED "cannot make a temporary folder"
else
    work=$(mktemp -d "$host_dir/.pull.XXXXXX") || die $EXIT_PULL_TARGET_UNUSABLE "cannot write in $host_dir"
fi
# A first pull that fails leaves no host folder behind (it made it, so it may remove it).
cleanup() {
    rm -rf "$work"
    if [ "$1" -ne 0 ] && [ $new_host -eq 1 ]; then
        rm -rf "$host_dir"
    fi
}
trap 'cleanup $?' EXIT

# Two pulls into one folder at once would both append the same rows. (PostgreSQL needs no lock:
# its transactions land each row once.)
if [ -z "$into" ] && command -v flock >/dev/null; then
    exec 9>"$host_dir/.pull.lock"
    flock -n 9 || die $EXIT_FAILED "another pull into $host_dir is running"
fi

# Run CMD on the host; stdout to $1. Exits with a message that says what went wrong. Bounded in
# time on both sides: here by timeout around ssh (ServerAliveInterval notices a dead link), there
# by timeout around the command when the host has it (coreutils), so a step that never ends
# neither holds this pull (and the lock later pulls need) nor keeps running on the Pi.
remote() {
    local out=$1 what=$2 command=$3 status=0 bounded quoted
    quoted=$(sh_quote "$command")
    bounded="if command -v timeout >/dev/null 2>&1; then exec timeout -k 10 $step_timeout sh -c $quoted; else exec sh -c $quoted; fi"
    timeout -k 10 "$step_timeout" "${ssh_cmd[@]}" "$host" "$bounded" >"$out" 2>"$work/stderr" </dev/null || status=$?
    [ $status -eq 0 ] && return 0
    local detail
    detail=$(tail -n 5 "$work/stderr")
    case $status in
    124 | 137) die $EXIT_BAD_EXPORT "$what on $host took longer than $step_timeout s (--timeout) and was ended" ;;
    255) die $EXIT_UNREACHABLE "cannot reach $host over ssh: ${detail:-ssh exited 255}" ;;
    126 | 127) die $EXIT_NOT_INSTALLED "metascope is not installed on $host (run deploy/push.sh $host first, or give --remote-command): ${detail:-exit $status}" ;;
    *) die $EXIT_BAD_EXPORT "$what on $host failed (exit $status): ${detail:-no message}" ;;
    esac
}

# export_table LOCAL_NAME HOST_NAME AFTER_ID: the host's table into $work/LOCAL_NAME.csv.
export_table() {
    local table=$1 after=$3 command="$remote_prefix export$config_arg --table $2 --format csv"
    [ -z "$after" ] || command+=" --after-id $after"
    if [ -n "$since" ] && [ "$table" != runs ]; then
        command+=" --since $(sh_quote "$since")"
    fi
    remote "$work/$table.csv" "exporting $table" "$command"
}

merger() {
    python3 "$HERE/pull_merge.py" "$@" || exit $?
}

lander() {
    "$METASCOPE_PYTHON" "$HERE/pull_postgres.py" "$@" || exit $?
}

# Which database the host has now, and where its rows go here (rearranging an old layout).
remote "$work/status.json" "asking metascope status" "$remote_prefix status$config_arg --json"
export_table runs runs ""
if [ -n "$into" ]; then
    lander prepare "$into" "$host_name" "$work/status.json" "$work/runs.csv" "$work/answer"
else
    merger prepare "$host_dir" "$work/status.json" "$work/runs.csv" "$work/answer"
fi
# The answer: the database's folder here, then each table to pull in order (cells first, runs
# last: see pull_merge.py), as its name here, its name on the host (older hosts use older names)
# and the last id held here.
{
    read -r database_dir
    while IFS=$'\t' read -r table remote_table after; do
        export_table "$table" "$remote_table" "$after"
    done
} <"$work/answer"
if [ -n "$into" ]; then
    # The answer names the database's folder: under --crops-dir/HOST/ for its snapshots and crops.
    database_dir=$host_dir/$database_dir
    lander merge "$into" "$host_name" "$work" "$host_name/${database_dir##*/}"
    if [ -n "$crops_dir" ]; then
        mkdir -p "$database_dir" || die $EXIT_PULL_TARGET_UNUSABLE "cannot create $database_dir (--crops-dir)"
    fi
else
    merger merge "$host_dir" "$work" "$host_name/${database_dir##*/}"
    [ $write_csv -eq 0 ] || merger csv "$host_dir"
fi

# Copy the host's folder $2 (snapshots or crops) into DATABASE_DIR/$1/.
copy_folder() {
    local what=$1 folder=$2
    remote "$work/has-$what" "looking for $folder" "if [ -d $(sh_quote "$folder") ]; then echo yes; fi"
    if [ "$(cat "$work/has-$what")" = yes ]; then
        # No --delete: files the Pi has since dropped (size cap) stay here. rsync writes
        # each file under a temp name and renames it, so a broken copy damages nothing.
        # "--": pull_merge.py names DATABASE_DIR without the ./ that kept a DEST starting with '-' a path.
        timeout -k 10 "$step_timeout" rsync -rt --timeout="$step_timeout" --exclude='.*' -e "$rsh" -- \
            "$host:$folder/" "$database_dir/$what/" 2>"$work/stderr" ||
            die $EXIT_COPY_FAILED "copying $what from $host:$folder failed: $(tail -n 5 "$work/stderr")"
        printf '%s: %s: copied to %s/%s\n' "$host_name" "$what" "$database_dir" "$what"
    else
        printf '%s: %s: none on %s (%s does not exist)\n' "$host_name" "$what" "$host" "$folder"
    fi
}

if [ $copy_snapshots -eq 1 ]; then
    if [ -z "$snapshots" ]; then
        # The state directory is the Pi's config's business: metascope status named it.
        snapshots=$(python3 "$HERE/pull_merge.py" field "$work/status.json" snapshots folder) ||
            die $EXIT_BAD_EXPORT "metascope status on $host named no snapshots folder (give --snapshots DIR or --no-snapshots)"
    fi
    copy_folder snapshots "$snapshots"
fi
if [ $copy_crops -eq 1 ]; then
    # A host older than crops names no crops folder: nothing to copy, not an error.
    if crops=$(python3 "$HERE/pull_merge.py" field "$work/status.json" crops folder 2>/dev/null); then
        copy_folder crops "$crops"
    else
        printf '%s: crops: none (metascope on %s keeps no crops)\n' "$host_name" "$host"
    fi
fi
if [ -n "$into" ]; then
    # Not the URL: it may hold a password.
    printf 'pulled %s into PostgreSQL (%s)\n' "$host" "${database_dir##*/}"
else
    printf 'pulled %s into %s\n' "$host" "$database_dir"
fi
