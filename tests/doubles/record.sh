# shellcheck shell=sh
# Sourced by the command doubles in this folder (tests/test_provision_kind.py puts the folder
# first on PATH). Each call is logged as one line, the tool's name and its arguments, to
# $MESHLAB_DOUBLES_LOG; $MESHLAB_DOUBLES_STATE is a folder where the doubles keep what a real
# tool would keep (the kind clusters that exist, how often a check was tried).
: "${MESHLAB_DOUBLES_LOG:?set MESHLAB_DOUBLES_LOG to the file the doubles log their calls to}"
: "${MESHLAB_DOUBLES_STATE:?set MESHLAB_DOUBLES_STATE to a folder the doubles keep state in}"
tool=$(basename "$0")
printf '%s %s\n' "$tool" "$*" >>"$MESHLAB_DOUBLES_LOG"

# attempt NAME: count one more call of NAME and print the count so far.
attempt() {
  counter="$MESHLAB_DOUBLES_STATE/attempts-$1"
  count=$(($(cat "$counter" 2>/dev/null || echo 0) + 1))
  echo "$count" >"$counter"
  echo "$count"
}

# flag NAME ARGS...: the value of --NAME (`--NAME value` or `--NAME=value`), or nothing.
flag() {
  name=$1
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      "--$name") echo "${2:-}"; return 0 ;;
      "--$name="*) echo "${1#*=}"; return 0 ;;
    esac
    shift
  done
}

# verb ARGS...: the first argument that is neither a flag nor the value of --context,
# --kubeconfig or --kube-context (how kubectl, istioctl, linkerd and helm take them).
verb() {
  while [ $# -gt 0 ]; do
    case $1 in
      --context | --kubeconfig | --kube-context) shift ;;
      -*) ;;
      *) echo "$1"; return 0 ;;
    esac
    shift
  done
}

# fails_now SETTING NAME: whether a check configured by SETTING (never | once | unset) fails on
# this call: `never` always fails, `once` fails the first call of NAME only.
fails_now() {
  case $1 in
    never) return 0 ;;
    once) [ "$(attempt "$2")" -eq 1 ] ;;
    *) return 1 ;;
  esac
}
