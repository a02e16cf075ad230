#!/usr/bin/env bash
# Writes the `users.conf` that nats-server.conf includes: one user per mabeam service role,
# and one per agent or agent-sim fleet with permissions naming its agent ids.
#
#   gen-users.sh [--agent ID]... [--fleet NAME=ID,ID,...]... > users.conf
#
# Each user authenticates with an nkey when MABEAM_NATS_NKEY_<NAME> holds its public key (U…)
# while this script runs, else with a password nats-server reads from its own environment at
# start: MABEAM_NATS_PASSWORD_<NAME>. <NAME> is the user name in upper case with `-` and `:`
# as `_` (REGISTRY, COORDINATOR, FAULT_INJECTOR, TELEMETRY, CLIENT, OPERATOR, the fleet
# name, the agent id). No secret is written to the file.
#
# nats-server parses such a variable's value as a config value, so give passwords in double
# quotes: MABEAM_NATS_PASSWORD_REGISTRY='"s3cret#1"' (unquoted, a password like 12e4… reads
# as a number and `#` starts a comment). A bcrypt hash ("$2a$11$…") works the same way.
#
# Agents may publish ballots only on their own vote subjects, which the server enforces;
# registration and heartbeats are signed with the agent's ed25519 key and bound to its id by
# the registry, so those subjects need no per-agent split.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" >&2
  exit 2
}

id_ok() { [[ "$1" =~ ^[A-Za-z0-9_:-]{1,128}$ ]]; }

var_name() { tr 'a-z:-' 'A-Z__' <<<"$1"; }

# credentials NAME: the user's authentication fields.
credentials() {
  local var nkey_var
  var=$(var_name "$1")
  nkey_var="MABEAM_NATS_NKEY_${var}"
  if [[ -n "${!nkey_var:-}" ]]; then
    [[ "${!nkey_var}" =~ ^U[A-Z2-7]{55}$ ]] || { echo "$nkey_var is not a user nkey public key" >&2; exit 1; }
    printf 'nkey: "%s"' "${!nkey_var}"
  else
    printf 'user: "%s", password: $MABEAM_NATS_PASSWORD_%s' "$1" "$var"
  fi
}

# agent_permissions USER ID...: ballots on its own vote subjects, its own inboxes.
agent_permissions() {
  local user=$1
  shift
  local pub=() sub=()
  for id in "$@"; do
    pub+=("\"mabeam.sessions.*.votes.$id\"")
    sub+=("\"mabeam.agents.$id.*\"")
  done
  local IFS=,
  printf '{\n'
  printf '      publish: { allow: [%s, "mabeam.registry.register", "mabeam.registry.heartbeat", "mabeam.registry.deregister", "_INBOX.%s.>"] }\n' "${pub[*]}" "$user"
  # Votes of every session: Byzantine sessions need the peers' signed prepares and commits.
  printf '      subscribe: { allow: [%s, "mabeam.sessions.*.votes.*", "$SRV.>", "_INBOX.%s.>"] }\n' "${sub[*]}" "$user"
  printf '      allow_responses: true\n    }'
}

agents=()
fleets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --agent) [[ $# -ge 2 ]] || usage; agents+=("$2"); shift 2 ;;
    --fleet) [[ $# -ge 2 ]] || usage; fleets+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
done

echo "# Written by deploy/nats/gen-users.sh; regenerate rather than edit."
# Variables are visible only in the file that includes them, so the roles come in here.
echo 'include "permissions.conf"'
echo "authorization {"
echo "  users = ["
for role in registry coordinator fault-injector telemetry client operator; do
  perms="\$$(var_name "$role")_PERMISSIONS"
  printf '    { %s, permissions: %s }\n' "$(credentials "$role")" "$perms"
done
for id in "${agents[@]}"; do
  id_ok "$id" || { echo "invalid agent id: $id" >&2; exit 1; }
  printf '    { %s, permissions: %s }\n' "$(credentials "$id")" "$(agent_permissions "$id" "$id")"
done
for fleet in "${fleets[@]}"; do
  name=${fleet%%=*}
  ids=${fleet#*=}
  [[ "$fleet" == *=* && -n "$ids" ]] || { echo "--fleet wants NAME=ID,ID,...: $fleet" >&2; exit 1; }
  id_ok "$name" || { echo "invalid fleet name: $name" >&2; exit 1; }
  IFS=, read -r -a members <<<"$ids"
  for id in "${members[@]}"; do
    id_ok "$id" || { echo "invalid agent id in fleet $name: $id" >&2; exit 1; }
  done
  printf '    { %s, permissions: %s }\n' "$(credentials "$name")" "$(agent_permissions "$name" "${members[@]}")"
done
echo "  ]"
echo "}"
