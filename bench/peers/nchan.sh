#!/bin/sh
# Starts the nginx + nchan benchmark peer in the foreground.
#
#   bench/peers/nchan.sh PORT WORKDIR [REDIS_URL]
#
# Writes WORKDIR/nginx.conf from nchan.conf.in, checks it, then replaces this
# shell with the nginx master (its pid is this script's pid; the workers are
# its children). SIGTERM / SIGINT to that pid stop nginx (fast shutdown),
# SIGQUIT stops it gracefully.
#
# With REDIS_URL (redis://HOST:PORT[/DB]): one instance of the cluster peer
# (bench/cluster.mjs), from nchan-cluster.conf.in: channels and messages are
# in Redis (nchan_redis_pass to an upstream with nchan_redis_server), so that
# a message published to one instance reaches the subscribers of every
# instance on the same Redis.
#
# Environment (optional):
#   NCHAN_WORKERS       with REDIS_URL: worker_processes [1: one process per
#                       instance, as one agentwire node with one loop or one
#                       Socket.IO process; without: auto]
#   NCHAN_REDIS_MODE    with REDIS_URL: nchan_redis_storage_mode: distributed,
#                       backup or nostore [distributed]
#   NCHAN_MODULE        path of ngx_nchan_module.so [/usr/lib/nginx/modules/ngx_nchan_module.so]
#   NCHAN_SHM           nchan_shared_memory_size [512m]
#   NCHAN_BUFFER        nchan_message_buffer_length per channel [10]
#   NCHAN_MSG_TIMEOUT   nchan_message_timeout [60s]
#   NCHAN_NGINX         nginx binary [nginx]
set -eu

if [ $# -ne 2 ] && [ $# -ne 3 ]; then
    echo "usage: $0 PORT WORKDIR [REDIS_URL]" >&2
    exit 2
fi
port=$1
workdir=$2
redis_url=${3:-}
case $port in
    ''|*[!0-9]*) echo "$0: PORT must be a number" >&2; exit 2 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "$0: PORT must be in 1..65535" >&2
    exit 2
fi

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
template=$here/nchan.conf.in
workers=${NCHAN_WORKERS:-auto}
if [ -n "$redis_url" ]; then
    case $redis_url in
        redis://*) ;;
        *) echo "$0: REDIS_URL must start with redis://" >&2; exit 2 ;;
    esac
    case $redis_url in
        *[!A-Za-z0-9_.:/@-]*) echo "$0: REDIS_URL may hold only [A-Za-z0-9_.:/@-]" >&2; exit 2 ;;
    esac
    template=$here/nchan-cluster.conf.in
    workers=${NCHAN_WORKERS:-1}
fi
redis_mode=${NCHAN_REDIS_MODE:-distributed}
module=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
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

# As root, nginx would run its workers as an unprivileged user that may not
# be able to write to WORKDIR (mktemp -d makes it 0700); keep them as root.
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

# -e sends the log of early start-up to WORKDIR too, not to the compiled-in
# /var/log/nginx/error.log.
"$nginx" -t -q -p "$workdir/" -e "$workdir/error.log" -c "$workdir/nginx.conf"
exec "$nginx" -p "$workdir/" -e "$workdir/error.log" -c "$workdir/nginx.conf" -g 'daemon off;'
