# Shared by bench/*.sh: a scratch directory and process list cleaned up on
# exit, waiting for a port to accept connections, and the reference nginx.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  exit 1
}

# Prints the nginx binary, installing Debian's nginx first if it is missing.
ensure_nginx() {
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    local sudo
    sudo=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx-light || $sudo apt-get install -y -qq nginx; } >&2
  fi
  command -v nginx || echo /usr/sbin/nginx
}

# Writes DIR/nginx.conf: nginx on 127.0.0.1:PORT relaying gRPC to
# 127.0.0.1:WORKER_PORT over a keep-alive pool; EXTRA goes at the top.
nginx_conf() {
  local dir=$1 port=$2 worker_port=$3 extra=${4:-}
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<NGINX
$extra
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir;
  # Without these, nginx closes a client connection after 1,000 requests
  # and the calls in flight on it fail.
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream worker { server 127.0.0.1:$worker_port; keepalive 128; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$port http2;
    location / { grpc_pass grpc://worker; }
  }
}
NGINX
}
