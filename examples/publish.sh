#!/usr/bin/env bash
# Publishes a whole agent run to one user through agentwire's HTTP API with curl.
#   AGENTWIRE_URL=http://127.0.0.1:8080 AGENTWIRE_API_KEY=... examples/publish.sh demo "What is 6*7?"
# Each event goes through POST /api/v1/publish; agentwire checks the run's order
# (409 run_order when it is broken) and delivers to every connection of the user.
set -euo pipefail
url=${AGENTWIRE_URL:-http://127.0.0.1:8080}
key=${AGENTWIRE_API_KEY:?set AGENTWIRE_API_KEY to the API key agentwire printed}
user=${1:-demo}
question=${2:-What is 6*7?}
question=$(printf '%s' "$question" | sed 's/\\/\\\\/g; s/"/\\"/g')  # JSON string escaping
run="run_$(date +%s%N)"
thread="thread_shell"

publish() {
  curl -sS --fail-with-body -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
    "$url/api/v1/publish" -d "$1"
  echo
}

publish "{\"user_id\":\"$user\",\"type\":\"agent_started\",\"thread_id\":\"$thread\",\"run_id\":\"$run\",\"agent_name\":\"shell\"}"
publish "{\"user_id\":\"$user\",\"type\":\"agent_thinking\",\"thread_id\":\"$thread\",\"run_id\":\"$run\",\"reasoning\":\"Asking the calculator\"}"
publish "{\"user_id\":\"$user\",\"type\":\"tool_executing\",\"thread_id\":\"$thread\",\"run_id\":\"$run\",\"tool_name\":\"bc\",\"parameters\":{\"expression\":\"6*7\"}}"
publish "{\"user_id\":\"$user\",\"type\":\"tool_completed\",\"thread_id\":\"$thread\",\"run_id\":\"$run\",\"tool_name\":\"bc\",\"results\":{\"value\":42},\"duration\":1}"
publish "{\"user_id\":\"$user\",\"type\":\"agent_completed\",\"thread_id\":\"$thread\",\"run_id\":\"$run\",\"status\":\"success\",\"final_response\":\"$question The answer is 42.\"}"
