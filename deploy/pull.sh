#!/usr/bin/env bash
# Pull a metascope Pi's results to this machine, incrementally, over ssh.
#
# For each table it asks the Pi for the rows after the highest id already held here
# (`metascope export --after-id N`), so repeated pulls add only new rows, with no duplicates
# and no gaps (ids are AUTOINCREMENT on the Pi and never reused). Each updated CSV is built
# in a temp file beside the old one and renamed over it, so a pull that fails half way leaves
# what was pulled before untouched.
set -euo pipefail

PROG=pull.sh
EXIT_USAGE=2 EXIT_UNREACHABLE=3 EXIT_NOT_INSTALLED=4 EXIT_EXPORT=5 EXIT_SNAPSHOTS=6
# Cells first, runs last: a cell is committed together with or after its frame, and a frame
# after its run, so every row pulled has its frame and run in the same or an earlier pull.
# cells and frames are appended; runs (a few rows, whose end time and totals change while the
# run goes on) are fetched whole each time and replace the rows held here.
TABLES=(cells frames runs)

usage() {
    cat <<'EOF'
Usage: deploy/pull.sh HOST [options]

Pull results from the metascope Pi HOST into DEST/HOST/ (cells.csv, frames.csv, runs.csv,
snapshots/). Run it as often as you like: each pull appends only the rows that are new since
the last one. Several Pis can be pulled into the same DEST.

HOST is anything ssh accepts (a ~/.ssh/config alias, name, address, or user@host); user,
port and key come from your ssh config or the options below. Use key authentication: a pull
makes several ssh connections.

Options:
  --dest DIR             where to keep pulled results (default: $METASCOPE_PULL_DEST or ./results)
  --since ISO8601        only cells and frames captured at or after this time (runs are always
                         pulled in full, they describe the cells)
  --remote-command CMD   the metascope command on HOST, as a shell command
                         (default: $METASCOPE_REMOTE_COMMAND, else `metascope` on HOST's PATH,
                         else /opt/metascope/venv/bin/metascope)
  --remote-config PATH   the config file metascope reads on HOST (default:
                         $METASCOPE_REMOTE_CONFIG, else its own: /etc/metascope/metascope.toml)
  --snapshots DIR        HOST's snapshots folder (default: the one `metascope status` names)
  --no-snapshots         do not copy snapshots
  -F FILE                ssh config file (passed to ssh)
  -o OPTION              ssh option, e.g. -o Port=2222 (repeatable; passed to ssh)
  -i FILE                ssh identity file (passed to ssh)
  -p PORT                ssh port (passed to ssh)
  -h, --help             this help

Exit status: 0 pulled; 2 bad arguments; 3 HOST unreachable over ssh; 4 metascope is not
installed on HOST; 5 the export on HOST failed (the database is missing or unreadable...);
6 copying snapshots failed; 1 anything else (a local file problem).
EOF
}

die() {
    local code=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

# Quote one word for a POSIX shell on the far side of ssh.
sh_quote() {
    printf "'%s'" "${1//\'/\'\\\'\'}"
}

# Quote one word for rsync's -e parser (single quotes, a quote inside is doubled).
rsync_quote() {
    printf "'%s'" "${1//\'/\'\'}"
}

host="" dest="${METASCOPE_PULL_DEST:-results}" since="" snapshots=""
remote_command="${METASCOPE_REMOTE_COMMAND:-}" remote_config="${METASCOPE_REMOTE_CONFIG:-}" copy_snapshots=1
ssh_opts=()
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --dest | --since | --remote-command | --remote-config | --snapshots | -F | -o | -i | -p)
        if [ $# -lt 2 ] || [ -z "$2" ]; then die $EXIT_USAGE "$1 needs a value (see --help)"; fi
        case $1 in
        --dest) dest=$2 ;;
        --since) since=$2 ;;
        --remote-command) remote_command=$2 ;;
        --remote-config) remote_config=$2 ;;
        --snapshots) snapshots=$2 ;;
        *) ssh_opts+=("$1" "$2") ;;
        esac
        shift 2
        ;;
    --no-snapshots)
        copy_snapshots=0
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

# One folder per microscope, named after the host without any user@.
host_name=${host##*@}
case $host_name in
"" | . | .. | */*) die $EXIT_USAGE "HOST '$host' does not make a usable folder name" ;;
esac
host_dir=$dest/$host_name
new_host=0
[ -d "$host_dir" ] || new_host=1
mkdir -p "$host_dir" || die 1 "cannot create $host_dir"

# Fail fast instead of hanging when the network is down; the user's -o options come first,
# so theirs win (ssh keeps the first value it sees).
ssh_cmd=(ssh ${ssh_opts[@]+"${ssh_opts[@]}"} -o ConnectTimeout=15)

if [ -n "$remote_command" ]; then
    remote_prefix=$remote_command
else
    # A non-interactive ssh session's PATH does not include the venv, hence the fallback.
    # shellcheck disable=SC2016 # expanded by the shell on the host, not here
    remote_prefix='"$(command -v metascope || echo /opt/metascope/venv/bin/metascope)"'
fi
config_arg=""
[ -z "$remote_config" ] || config_arg=" --config $(sh_quote "$remote_config")"

work=$(mktemp -d "$host_dir/.pull.XXXXXX") || die 1 "cannot write in $host_dir"
# A first pull that fails leaves no empty host folder behind.
cleanup() {
    rm -rf "$work"
    if [ "$1" -ne 0 ] && [ $new_host -eq 1 ]; then
        rm -f "$host_dir/.pull.lock"
        rmdir "$host_dir" 2>/dev/null || true
    fi
}
trap 'cleanup $?' EXIT

# Two pulls into one folder at once would both append the same rows.
if command -v flock >/dev/null; then
    exec 9>"$host_dir/.pull.lock"
    flock -n 9 || die 1 "another pull into $host_dir is running"
fi

# Run CMD on the host; stdout to $1. Exits with a message that says what went wrong.
remote() {
    local out=$1 what=$2 command=$3 status=0
    "${ssh_cmd[@]}" "$host" "$command" >"$out" 2>"$work/stderr" </dev/null || status=$?
    [ $status -eq 0 ] && return 0
    local detail
    detail=$(tail -n 5 "$work/stderr")
    case $status in
    255) die $EXIT_UNREACHABLE "cannot reach $host over ssh: ${detail:-ssh exited 255}" ;;
    126 | 127) die $EXIT_NOT_INSTALLED "metascope is not installed on $host (run deploy/push.sh $host first, or give --remote-command): ${detail:-exit $status}" ;;
    *) die $EXIT_EXPORT "$what on $host failed (exit $status): ${detail:-no message}" ;;
    esac
}

# Highest id in a pulled CSV. Quote-aware: a quoted field may span lines, so only lines that
# start a record are read for their first field.
max_id() {
    awk 'BEGIN { max = 0; inq = 0 }
        !inq { split($0, f, ","); if (f[1] ~ /^[0-9]+$/ && f[1] + 0 > max) max = f[1] + 0 }
        { if (gsub(/"/, "\"") % 2 == 1) inq = !inq }
        END { print max }' "$1"
}

# The header and the records of CSV $2 whose id is not among the records of CSV $1.
without_ids_in() {
    awk 'function flush() { if (rec != "" && !(id in fresh)) printf "%s", rec; rec = "" }
        NR == FNR {
            if (FNR > 1 && !inq) { split($0, f, ","); fresh[f[1]] = 1 }
            if (gsub(/"/, "\"") % 2 == 1) inq = !inq
            next
        }
        FNR == 1 { inq = 0; print; next }
        { if (!inq) { flush(); split($0, f, ","); id = f[1] }
          rec = rec $0 "\n"
          if (gsub(/"/, "\"") % 2 == 1) inq = !inq }
        END { flush() }' "$1" "$2"
}

# Number of records (not lines) after the header.
count_rows() {
    awk 'BEGIN { n = 0; inq = 0 }
        NR > 1 && !inq { n++ }
        { if (gsub(/"/, "\"") % 2 == 1) inq = !inq }
        END { print n }' "$1"
}

pull_table() {
    local table=$1 file=$host_dir/$1.csv after=0 new=$work/$1.csv
    if [ "$table" != runs ] && [ -f "$file" ]; then after=$(max_id "$file"); fi
    local command="$remote_prefix export$config_arg --table $table --format csv --after-id $after"
    if [ -n "$since" ] && [ "$table" != runs ]; then
        command+=" --since $(sh_quote "$since")"
    fi
    remote "$new" "exporting $table" "$command"

    local header
    header=$(head -n 1 "$new")
    case $header in
    id | id,* | id$'\r') ;;
    *) die $EXIT_EXPORT "the export of $table from $host is not a CSV with an id column: '${header:0:80}'" ;;
    esac
    if [ -f "$file" ] && [ "$(head -n 1 "$file")" != "$header" ]; then
        die 1 "the columns of $table on $host changed; move $file aside and pull again to start a new file"
    fi

    local rows tmp=$work/$table.merged
    rows=$(count_rows "$new")
    if [ "$table" = runs ]; then
        # Rows the host no longer has (retention) stay; the others are replaced by their
        # current state.
        {
            if [ -f "$file" ]; then
                without_ids_in "$new" "$file"
                tail -n +2 "$new"
            else
                cat "$new"
            fi
        } >"$tmp" || die 1 "cannot write $tmp"
        mv -f "$tmp" "$file" || die 1 "cannot replace $file"
        printf '%s: %s: %s rows on the host, refreshed\n' "$host_name" "$table" "$rows"
        return 0
    fi
    if [ -f "$file" ] && [ "$rows" -eq 0 ]; then
        printf '%s: %s: no new rows\n' "$host_name" "$table"
        return 0
    fi
    {
        if [ -f "$file" ]; then
            cat "$file"
            tail -n +2 "$new"
        else
            cat "$new"
        fi
    } >"$tmp" || die 1 "cannot write $tmp"
    # $work is inside $host_dir: same filesystem, so the rename is atomic.
    mv -f "$tmp" "$file" || die 1 "cannot replace $file"
    printf '%s: %s: %s new rows (after id %s)\n' "$host_name" "$table" "$rows" "$after"
}

for table in "${TABLES[@]}"; do
    pull_table "$table"
done

if [ $copy_snapshots -eq 1 ]; then
    if [ -z "$snapshots" ]; then
        # The state directory is the Pi's config's business: ask metascope where it is.
        remote "$work/snapshots" "finding the snapshots folder (give --snapshots DIR or --no-snapshots)" \
            "s=\$($remote_prefix status$config_arg --json) && printf '%s' \"\$s\" | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"snapshots\"][\"folder\"])'"
        snapshots=$(cat "$work/snapshots")
        [ -n "$snapshots" ] || die $EXIT_EXPORT "metascope status on $host named no snapshots folder"
    fi
    remote "$work/has-snapshots" "looking for $snapshots" \
        "if [ -d $(sh_quote "$snapshots") ]; then echo yes; fi"
    if [ "$(cat "$work/has-snapshots")" = yes ]; then
        rsh=""
        for word in "${ssh_cmd[@]}"; do rsh+="$(rsync_quote "$word") "; done
        # No --delete: snapshots the Pi has since dropped (size cap) stay here. rsync writes
        # each file under a temp name and renames it, so a broken copy damages nothing.
        rsync -rt --exclude='.*' -e "$rsh" "$host:$snapshots/" "$host_dir/snapshots/" 2>"$work/stderr" ||
            die $EXIT_SNAPSHOTS "copying snapshots from $host:$snapshots failed: $(tail -n 5 "$work/stderr")"
        printf '%s: snapshots: copied to %s/snapshots\n' "$host_name" "$host_dir"
    else
        printf '%s: snapshots: none on %s (%s does not exist)\n' "$host_name" "$host" "$snapshots"
    fi
fi
printf 'pulled %s into %s\n' "$host" "$host_dir"
