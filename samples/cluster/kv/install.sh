#!/bin/sh
# Installs the store from the uploaded folder (every node) and starts its HTTP server, which the
# nodes' warm clones resume running. Usage: install.sh FOLDER
set -e
from=$1
mkdir -p /usr/local/lib /usr/local/bin /var/lib/kv /etc/kv /srv/kv-www/cgi-bin
cp "$from/kv.sh" /usr/local/lib/kv.sh
cp "$from/kv" /usr/local/bin/kv
cp "$from/www/cgi-bin/kv" /srv/kv-www/cgi-bin/kv
chmod 755 /usr/local/bin/kv /srv/kv-www/cgi-bin/kv
echo "node0 node1 node2" > /etc/kv/peers
busybox httpd -p 8080 -h /srv/kv-www
