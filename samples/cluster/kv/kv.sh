# The key-value store's shared shell functions (sourced by the CGI script and the kv command).
# Nodes are named in /etc/kv/peers (node0 node1 node2: the names vmfest's group gives the private
# network in /etc/hosts); /etc/kv/self is this node, /etc/kv/role "primary" or "replica"; the data
# is one file per key in /var/lib/kv.
data=/var/lib/kv

# The body of the answer of node $1 to the query $2 (empty when the node does not answer).
kv_request() {
  printf 'GET /cgi-bin/kv?%s HTTP/1.0\r\n\r\n' "$2" | nc -w 3 "$1" 8080 2>/dev/null |
    sed '1,/^\r$/d' | tr -d '\r'
}

# The first node that answers that it is the primary.
kv_primary() {
  for peer in $(cat /etc/kv/peers); do
    if [ "$(kv_request "$peer" op=role)" = primary ]; then
      echo "$peer"
      return 0
    fi
  done
  echo "no primary answers (peers: $(cat /etc/kv/peers))" >&2
  return 1
}

# Keys and values are words: letters, digits, '_' and '-' (no URL encoding needed).
kv_word() {
  case $1 in '' | *[!A-Za-z0-9_-]*) return 1 ;; esac
}
