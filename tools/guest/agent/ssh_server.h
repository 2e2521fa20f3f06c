/*
 * The guest's SSH server as vmfest-agent finds and handles it: which program serves port 22 and
 * how it is started, so that a warm clone's host key goes where that server reads it and no
 * server state (key, RNG) of the saved guest serves a clone.
 *
 * The ways cloud images run their SSH server:
 *  - OpenSSH's sshd as a daemon (Debian's cloud images): it re-reads its keys on SIGHUP.
 *  - OpenSSH started by a systemd socket: systemd (pid 1) holds port 22 and starts the server,
 *    with Accept=no once (ssh.service: Debian 12's ssh.socket, Ubuntu 22.10 and later), with
 *    Accept=yes once per connection (ssh@.service: `sshd -i`). Each server it starts reads the key
 *    on disk then.
 *  - dropbear as a daemon (vmfest's default model): the agent takes port 22 over and runs
 *    `dropbear -i` per connection, or dropbear started by a systemd socket.
 */
#pragma once

#include <signal.h>

#define DROPBEAR_HOST_KEY "/etc/dropbear/dropbear_ed25519_host_key"
#define OPENSSH_HOST_KEY "/etc/ssh/ssh_host_ed25519_key"

enum ssh_server_kind {
  SSH_SERVER_UNKNOWN, /* nothing listens on port 22, or something vmfest does not know */
  SSH_SERVER_OPENSSH_DAEMON,
  SSH_SERVER_DROPBEAR_DAEMON,
  SSH_SERVER_SYSTEMD_SOCKET,
  SSH_SERVER_AGENT, /* the agent itself, since it took port 22 from dropbear */
};

struct ssh_server {
  enum ssh_server_kind kind;
  int pid;     /* the daemon, or 1 (systemd) for a socket */
  int openssh; /* OpenSSH (else dropbear) */
  /* What serves port 22, in words: "OpenSSH started by ssh.socket (Accept=no) of pid 1
   * (systemd)"; for an unknown server, what it is and who holds port 22. */
  char description[320];
};

/* Finds who serves port 22: the processes holding its listening sockets and, for systemd, the
 * socket unit that listens there and the service it starts (read from the unit files). */
void find_ssh_server(struct ssh_server* server);

/* Stops the listening dropbear daemon `pid` (0: none; sessions of connected clients stay) and
 * serves port 22 in its place; NULL once the agent listens, an error reply otherwise. */
const char* take_over_from_dropbear(int pid);

/* Makes the sshd daemon `pid` re-read its host keys (SIGHUP: it executes itself anew); "ok\n"
 * once it listens on new sockets, an error reply otherwise. */
const char* reload_openssh(int pid);

/* Stops the servers a systemd socket started that still run on its listening socket (Accept=no),
 * so that the next connection starts a new one with the key on disk and a fresh RNG; NULL once
 * none runs, an error reply otherwise. */
const char* stop_socket_servers(void);

/* The socket on port 22 the agent serves once it took the port from dropbear; -1 before. */
int agent_ssh_listener(void);

/* Runs `dropbear -i` on each waiting connection of agent_ssh_listener(), the children with the
 * signal mask `child_mask`. */
void serve_ssh_connections(const sigset_t* child_mask);
