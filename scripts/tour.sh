#!/usr/bin/env bash
# The five-minute tour of the Spaces API with curl: a Space from creation to its end.
# Usage: scripts/tour.sh [BASE_URL]   (default http://127.0.0.1:8080)
# Fails (exit 1) on any unexpected status, so it doubles as a smoke test.
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080}"
API="$BASE/api/v1"

call() {  # call EXPECTED_STATUS METHOD PATH [TOKEN] [JSON]
  local want=$1 method=$2 path=$3 token=${4:-} body=${5:-}
  local args=(-s -o /tmp/townhall-tour.$$ -w '%{http_code}' -X "$method" "$API$path")
  [[ -n $token ]] && args+=(-H "Authorization: Bearer $token")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' -d "$body")
  local got; got=$(curl "${args[@]}")
  if [[ $got != "$want" ]]; then
    echo "FAIL: $method $path -> $got (wanted $want): $(cat /tmp/townhall-tour.$$)" >&2
    exit 1
  fi
  cat /tmp/townhall-tour.$$
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
trap 'rm -f /tmp/townhall-tour.$$' EXIT

echo "1. Ada and Bob get guest tokens (open mode)"
ADA=$(call 201 POST /sessions "" '{"name": "Ada"}' | field '["token"]')
BOB_SESSION=$(call 201 POST /sessions "" '{"name": "Bob"}')
BOB=$(echo "$BOB_SESSION" | field '["token"]')
BOB_ID=$(echo "$BOB_SESSION" | field '["identity"]')

echo "2. Ada creates a Space (she is its host) and starts it"
SPACE=$(call 201 POST /spaces "$ADA" '{"title": "Town hall", "description": "Q&A"}' | field '["id"]')
call 200 POST "/spaces/$SPACE/start" "$ADA" | field '["state"]'

echo "3. Bob asks to speak; Ada approves; Bob is on stage"
call 200 POST "/spaces/$SPACE/actions" "$BOB" '{"action": "request"}' >/dev/null
call 200 POST "/spaces/$SPACE/actions" "$ADA" "{\"action\": \"approve\", \"identity\": \"$BOB_ID\"}" \
  | field '["stage"]'

echo "4. Bob mutes himself; a listener reacts"
call 200 POST "/spaces/$SPACE/actions" "$BOB" '{"action": "mute"}' >/dev/null
call 202 POST "/spaces/$SPACE/reactions" "$BOB" '{"emoji": "🔥"}'
echo

echo "5. Anyone reads the snapshot; it is cacheable by version"
# (The reaction is folded in within a second and bumps the version: ask again if it did.)
for _ in 1 2 3; do
  VERSION=$(call 200 GET "/spaces/$SPACE" | field '["version"]')
  GOT=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: \"$VERSION\"" "$API/spaces/$SPACE")
  [[ $GOT == 304 ]] && break
  sleep 1
done
[[ $GOT == 304 ]] || { echo "FAIL: If-None-Match \"$VERSION\" -> $GOT (wanted 304)" >&2; exit 1; }
echo "   unchanged since version $VERSION: 304 Not Modified"

echo "6. Where to listen"
call 200 GET "/spaces/$SPACE/listen" | field '["edges"][0]["ws"]'

echo "7. Refusals are problem+json: Bob cannot end Ada's Space"
call 403 POST "/spaces/$SPACE/end" "$BOB" | field '["type"]'

echo "8. Ada ends the Space"
call 200 POST "/spaces/$SPACE/end" "$ADA" | field '["state"]'
echo "tour ok: $SPACE"
