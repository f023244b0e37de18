# Sourced by deploy/push.sh and deploy/pull.sh: what both need to talk to a Pi over ssh.
# The sourcing script sets PROG (its name, for messages) first.
# shellcheck shell=bash

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

# ssh_cmd (an array): ssh with the user's options first (ssh keeps the first value it sees, so
# theirs win), a connect timeout, so a dead network fails fast instead of hanging, and keepalives,
# so a link that dies mid-transfer ends the connection in about a minute. rsh: the same command
# quoted for rsync -e.
make_ssh_cmd() {
    ssh_cmd=(ssh "$@" -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4)
    rsh=""
    local word
    for word in "${ssh_cmd[@]}"; do rsh+="$(rsync_quote "$word") "; done
}
