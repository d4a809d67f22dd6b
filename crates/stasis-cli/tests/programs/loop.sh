#!/bin/bash
# loop.sh - a bash script loop across checkpoint/restore (Stasis test program).
#
# Run as `bash loop.sh CTL_DIR [TICK]` (TICK: seconds slept per tick, default 0.1); follows
# the workload protocol of workloads/common.h (ready = "<pid>\n" via ready.tmp.<pid> + rename;
# loop until CTL_DIR/verify exists; result = "PASS\n" or "FAIL: <msg>\n" via
# result.tmp.<pid> + rename; exit 0 / 1).
#
# Each tick increments the shell variable n, appends it to CTL_DIR/loop.log
# (opened per tick with >>) and to CTL_DIR/fd3.log through fd 3 (kept open, O_APPEND), and
# appends it to a bash array; then runs the external `sleep TICK`, so bash forks and waits
# for a child: a checkpoint may catch the child (or bash between fork and exec) as part of
# the tree. bash also keeps its script open (fd 255, with an offset it reads from).
#
# Verify: n continued from where the logs say it was: loop.log and fd3.log both hold exactly
# 1..n, the array holds 1..n, a SIGUSR1 trap still runs, and the shell's own pid is unchanged.
set -u
CTL=$1
TICK=${2:-0.1}
cd "$CTL" || exit 2

fail() {
    echo "FAIL (pid $$): $*" >&2
    printf 'FAIL: %s\n' "$*" > "result.tmp.$$"
    mv -f "result.tmp.$$" result
    exit 1
}

n=0
usr1=0
mypid=$$
declare -a seen=()
trap 'usr1=$((usr1 + 1))' USR1
: > loop.log
exec 3>> fd3.log || fail "cannot open fd3.log"
start=$SECONDS

printf '%s\n' "$$" > "ready.tmp.$$" && mv -f "ready.tmp.$$" ready || fail "cannot write ready"

while [[ ! -e verify ]]; do
    n=$((n + 1))
    echo "$n" >> loop.log
    echo "$n" >&3
    seen+=("$n")
    if (( SECONDS - start > 300 )); then
        fail "timeout: no verify request within 300 s"
    fi
    sleep "$TICK"
done

mapfile -t lines < loop.log
(( ${#lines[@]} == n )) || fail "loop.log has ${#lines[@]} lines, n is $n"
for ((i = 0; i < n; i++)); do
    [[ ${lines[i]} == "$((i + 1))" ]] || fail "loop.log line $((i + 1)) is '${lines[i]}'"
done
mapfile -t lines3 < fd3.log
(( ${#lines3[@]} == n )) || fail "fd3.log has ${#lines3[@]} lines, n is $n"
for ((i = 0; i < n; i++)); do
    [[ ${lines3[i]} == "$((i + 1))" ]] || fail "fd3.log line $((i + 1)) is '${lines3[i]}'"
done
(( ${#seen[@]} == n )) || fail "array has ${#seen[@]} entries, n is $n"
for ((i = 0; i < n; i++)); do
    [[ ${seen[i]} == "$((i + 1))" ]] || fail "array entry $i is '${seen[i]}'"
done
echo "$((n + 1))" >&3 || fail "write to fd 3 failed"
mapfile -t lines3 < fd3.log
[[ ${lines3[n]:-} == "$((n + 1))" ]] || fail "fd 3 no longer appends to fd3.log"
kill -USR1 $$
(( usr1 == 1 )) || fail "USR1 trap ran $usr1 times, expected 1"
[[ $$ == "$mypid" && $BASHPID == "$mypid" ]] || fail "pid changed: \$\$=$$ BASHPID=$BASHPID, was $mypid"
echo "loop.sh: info: n=$n"
printf 'PASS\n' > "result.tmp.$$"
mv -f "result.tmp.$$" result
exit 0
