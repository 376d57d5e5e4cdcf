#!/bin/sh
# Starts one instance of the nginx + nchan cluster peer in the foreground: an
# nchan whose channels and messages are in Redis (nchan_redis_pass to an
# upstream with nchan_redis_server), so that a message published to one
# instance reaches the subscribers of every instance on the same Redis.
#
#   bench/peers/nchan-cluster.sh PORT WORKDIR REDIS_URL
#
# REDIS_URL: redis://HOST:PORT[/DB]. As nchan.sh: writes WORKDIR/nginx.conf
# from nchan-cluster.conf.in, checks it, then replaces this shell with the
# nginx master (its pid is this script's pid; the workers are its children).
# SIGTERM / SIGINT to that pid stop nginx (fast shutdown).
#
# Environment (optional):
#   NCHAN_WORKERS       worker_processes [1: one process per instance, as one
#                       agentwire node with one loop or one Socket.IO process]
#   NCHAN_REDIS_MODE    nchan_redis_storage_mode: distributed, backup or nostore [distributed]
#   NCHAN_MODULE        path of ngx_nchan_module.so [/usr/lib/nginx/modules/ngx_nchan_module.so]
#   NCHAN_SHM           nchan_shared_memory_size [512m]
#   NCHAN_BUFFER        nchan_message_buffer_length per channel [10]
#   NCHAN_MSG_TIMEOUT   nchan_message_timeout [60s]
#   NCHAN_NGINX         nginx binary [nginx]
set -eu

if [ $# -ne 3 ]; then
    echo "usage: $0 PORT WORKDIR REDIS_URL" >&2
    exit 2
fi
port=$1
workdir=$2
redis_url=$3
case $port in
    ''|*[!0-9]*) echo "$0: PORT must be a number" >&2; exit 2 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "$0: PORT must be in 1..65535" >&2
    exit 2
fi
case $redis_url in
    redis://*) ;;
    *) echo "$0: REDIS_URL must start with redis://" >&2; exit 2 ;;
esac
case $redis_url in
    *[!A-Za-z0-9_.:/@-]*) echo "$0: REDIS_URL may hold only [A-Za-z0-9_.:/@-]" >&2; exit 2 ;;
esac

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
template=$here/nchan-cluster.conf.in
module=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
workers=${NCHAN_WORKERS:-1}
redis_mode=${NCHAN_REDIS_MODE:-distributed}
shm=${NCHAN_SHM:-512m}
buffer=${NCHAN_BUFFER:-10}
msg_timeout=${NCHAN_MSG_TIMEOUT:-60s}
nginx=${NCHAN_NGINX:-nginx}

case $workers in
    auto) ;;
    ''|*[!0-9]*) echo "$0: NCHAN_WORKERS must be a number or auto" >&2; exit 2 ;;
esac
case $redis_mode in
    distributed|backup|nostore) ;;
    *) echo "$0: NCHAN_REDIS_MODE must be distributed, backup or nostore" >&2; exit 2 ;;
esac
if [ ! -r "$module" ]; then
    echo "$0: nchan module not found at $module (install libnginx-mod-nchan)" >&2
    exit 1
fi

mkdir -p "$workdir"
workdir=$(CDPATH='' cd -- "$workdir" && pwd)
case $workdir in
    *[!A-Za-z0-9_./-]*) echo "$0: WORKDIR path may hold only [A-Za-z0-9_./-]" >&2; exit 2 ;;
esac
mkdir -p "$workdir/tmp/client_body" "$workdir/tmp/proxy" "$workdir/tmp/fastcgi" \
    "$workdir/tmp/uwsgi" "$workdir/tmp/scgi"

user_line=
if [ "$(id -u)" -eq 0 ]; then
    user_line='user root;'
fi

sed -e "s|@WORKDIR@|$workdir|g" \
    -e "s|@PORT@|$port|g" \
    -e "s|@MODULE@|$module|g" \
    -e "s|@USER@|$user_line|g" \
    -e "s|@WORKERS@|$workers|g" \
    -e "s|@SHM@|$shm|g" \
    -e "s|@BUFFER@|$buffer|g" \
    -e "s|@MSG_TIMEOUT@|$msg_timeout|g" \
    -e "s|@REDIS_URL@|$redis_url|g" \
    -e "s|@REDIS_MODE@|$redis_mode|g" \
    "$template" > "$workdir/nginx.conf"

"$nginx" -t -q -p "$workdir/" -e "$workdir/error.log" -c "$workdir/nginx.conf"
exec "$nginx" -p "$workdir/" -e "$workdir/error.log" -c "$workdir/nginx.conf" -g 'daemon off;'
