/*
 * vmfest-agent: the guest side of warm clones.
 *
 * A warm clone resumes a memory image saved from one booted guest, so every clone starts with
 * that guest's clock, hostname, SSH keys and RNG state. This agent is already waiting on the
 * virtio-serial port "org.vmfest.agent" when the image is saved; right after a clone resumes, the
 * host writes the clone's own identity into the port and the agent applies it before any SSH
 * connection is made, so no extra SSH round trip is needed.
 *
 * Protocol (one request, one reply line):
 *   host:  "ping\n"                                              guest: "pong\n"
 *   host:  "ssh-server\n"                    guest: "ok DESCRIPTION\n" or "unknown DESCRIPTION\n"
 *          Which SSH server serves port 22 and how it is started (ssh_server.h): a warm image is
 *          only possible with one the agent knows; DESCRIPTION names it, or what holds port 22.
 *   host:  "quiesce\n" or "quiesce keep-cache\n" (before the image is saved)   guest: "ok\n"
 *          Notes the SSH server for the clones. Hands port 22 from a dropbear daemon to the agent
 *          (OpenSSH's sshd daemon stays and reloads its keys instead; a server a systemd socket
 *          started is stopped, the next connection starts a new one), and flushes the page cache
 *          to disk. The agent then serves each connection as inetd would: it forks `dropbear -i`
 *          on it, which loads the host key on disk at that moment and seeds its RNG afresh. So a
 *          clone needs no new daemon after the resume, and no two clones share a server's RNG.
 *          Plain "quiesce" also drops it, for an image whose state holds the guest's memory: with
 *          init_on_free=1 on the kernel command line the freed pages are zero, which the saved
 *          state stores in a few bytes each. An image whose memory clones map keeps it: there a
 *          cached file costs nothing, and each clone would otherwise read it from disk again.
 *   host:  "identity SECONDS NANOSECONDS ENTROPY_HEX HOSTNAME USER KEYS_LENGTH DROPBEAR_LENGTH
 *           OPENSSH_LENGTH OPENSSH_PUBLIC_LENGTH\n" (one line)
 *          followed by KEYS_LENGTH bytes of authorized_keys for USER, then the Ed25519 host key in
 *          dropbear's format, in OpenSSH's format, and its OpenSSH public key line
 *   guest: "ok\n" once the clock is set, the RNG reseeded, the keys and hostname applied and
 *          port 22 answers with the new host key; "error TEXT\n" otherwise.
 *
 *   host:  "guard on\n" or "guard off\n"                                            guest: "ok\n"
 *          Ties the guest's life to the host's connection: once on, a host side that goes away
 *          and does not come back within GUARD_GRACE_MS powers the guest off. A hypervisor that
 *          cannot end a VM with the process that owns it (a restored libvirt domain) holds the
 *          connection for that process instead; the grace covers a resume, where the port reads
 *          as closed until the new owner connects.
 *
 * The SSH server is whichever the guest runs (ssh_server.h): OpenSSH's sshd as a daemon or started
 * by a systemd socket (a stock cloud image: the key goes to /etc/ssh) or dropbear (vmfest's
 * default model: the key goes to /etc/dropbear). The agent is
 * built static, so the same binary serves any x86-64 guest; cloud images get it through their
 * cloud-init seed (write_files), vmfest's default model has it built in.
 *
 * Everything is done here, in C, without a fork: right after a resume every code path in a TCG
 * guest runs cold, and each shell, awk or dropbearconvert process the cold-boot seed script would
 * start costs tens of milliseconds; starting a dropbear daemon and waiting for it to listen cost
 * 150-250 ms.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/random.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ssh_server.h"

#define PORT_NAME "org.vmfest.agent"
#define MAX_KEYS (64 * 1024)
#define MAX_HOST_KEY 1024
#define MAX_ENTROPY 64
#define GUARD_GRACE_MS 5000

static int open_port(void) {
  DIR* ports = opendir("/sys/class/virtio-ports");
  if (ports == NULL) return -1;
  int fd = -1;
  struct dirent* entry;
  while (fd < 0 && (entry = readdir(ports)) != NULL) {
    char path[512];
    char name[128] = "";
    snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", entry->d_name);
    FILE* file = fopen(path, "r");
    if (file == NULL) continue;
    if (fgets(name, sizeof(name), file) != NULL) name[strcspn(name, "\n")] = '\0';
    fclose(file);
    if (strcmp(name, PORT_NAME) != 0) continue;
    snprintf(path, sizeof(path), "/dev/%s", entry->d_name);
    fd = open(path, O_RDWR | O_CLOEXEC);
  }
  closedir(ports);
  return fd;
}

/* What the host sent and no request has consumed yet: read in chunks, since each system call
 * right after a resume runs through code TCG has not translated yet. */
static char pending[8192];
static size_t pending_from, pending_to;

/* While no host is connected the port polls readable at once (and reads as end of file); the
 * kernel signals the host's connection with SIGIO (O_ASYNC), which stays blocked but for the wait
 * in fill_pending, so the agent sleeps until then instead of polling: an idle guest stays idle. */
static sigset_t mask_without_sigio;
static int host_signals_connection;

static void on_sigio(int signal_number) { (void)signal_number; /* only ends a ppoll */ }

/* "guard on": the host's connection holds the guest's life. */
static int guarded;

/* The host side of a guarded port closed: unless a host connects again within the grace, the guest
 * powers off at once (nothing of a disposable clone needs saving). */
static int host_connected(int fd);

static void power_off_unless_host_returns(int fd) {
  for (int waited = 0; waited < GUARD_GRACE_MS; waited += 100) {
    if (host_connected(fd)) return;
    const struct timespec tick = {0, 100000000};
    nanosleep(&tick, NULL);
  }
  reboot(RB_POWER_OFF);
}

static void ask_for_sigio(int fd) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = on_sigio;
  sigset_t sigio;
  sigemptyset(&sigio);
  sigaddset(&sigio, SIGIO);
  host_signals_connection = sigaction(SIGIO, &action, NULL) == 0 &&
                            sigprocmask(SIG_BLOCK, &sigio, &mask_without_sigio) == 0 &&
                            fcntl(fd, F_SETOWN, getpid()) == 0 &&
                            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) == 0;
}

/* Waits for bytes from the host into the empty `pending`, serving SSH connections meanwhile. */
static int fill_pending(int fd) {
  pending_from = pending_to = 0;
  /* Without SIGIO from the port, a short nap keeps a saved image resuming promptly. */
  static const struct timespec nap = {0, 5000000};
  for (;;) {
    const int ssh_listener = agent_ssh_listener();
    struct pollfd pollers[2] = {{fd, POLLIN, 0}, {ssh_listener, POLLIN, 0}};
    const nfds_t count = ssh_listener >= 0 ? 2 : 1;
    if (poll(pollers, count, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (ssh_listener >= 0 && (pollers[1].revents & POLLIN)) {
      serve_ssh_connections(&mask_without_sigio);
    }
    if (pollers[0].revents == 0) continue;
    /* With no host connected, the port polls readable and reads as end of file. */
    ssize_t got = read(fd, pending, sizeof(pending));
    if (got > 0) {
      pending_to = (size_t)got;
      return 0;
    }
    if (got < 0 && errno != EINTR && errno != EAGAIN) return -1;
    if (got == 0 && guarded) {
      power_off_unless_host_returns(fd);
      continue;
    }
    if (got == 0) { /* sleep until a host connects, or SSH knocks */
      ppoll(pollers + 1, count - 1, host_signals_connection ? NULL : &nap, &mask_without_sigio);
    }
  }
}

/* Reads exactly n bytes. */
static int read_exact(int fd, char* buffer, size_t n) {
  size_t done = 0;
  while (done < n) {
    if (pending_from == pending_to && fill_pending(fd) != 0) return -1;
    size_t take = pending_to - pending_from;
    if (take > n - done) take = n - done;
    memcpy(buffer + done, pending + pending_from, take);
    pending_from += take;
    done += take;
  }
  return 0;
}

static int read_line(int fd, char* line, size_t size) {
  size_t length = 0;
  while (length + 1 < size) {
    if (read_exact(fd, line + length, 1) != 0) return -1;
    if (line[length] == '\n') {
      line[length] = '\0';
      return 0;
    }
    length++;
  }
  return -1;
}

static ssize_t send_without_blocking(int fd, const char* text, size_t length) {
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  const ssize_t put = write(fd, text, length);
  const int error = errno;
  fcntl(fd, F_SETFL, flags);
  errno = error;
  return put;
}

/* Whether the host's side of the port is connected. */
static int host_connected(int fd) {
  struct pollfd port = {fd, POLLIN, 0};
  return poll(&port, 1, 0) >= 0 && !(port.revents & POLLHUP);
}

/* A write to the port waits while no host is connected (also for a moment after one connected,
 * until the guest's kernel has heard of it): a guarded guest must not wait there for a host that is
 * gone, so it writes without blocking and gives a host that went away its grace. */
static void reply(int fd, const char* text) {
  size_t length = strlen(text);
  while (length > 0) {
    if (guarded && !host_connected(fd)) {
      power_off_unless_host_returns(fd);
      continue;
    }
    ssize_t put = guarded ? send_without_blocking(fd, text, length) : write(fd, text, length);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0 && errno == EAGAIN) {
      const struct timespec nap = {0, 5000000}; /* the host has not read the last reply yet */
      nanosleep(&nap, NULL);
      continue;
    }
    if (put <= 0) return;
    text += put;
    length -= (size_t)put;
  }
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Mixes host randomness into the pool and forces a CRNG reseed: clones must not share a stream. */
static int reseed(const char* hex) {
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[MAX_ENTROPY];
  } pool;
  size_t length = strlen(hex) / 2;
  if (length == 0 || length > MAX_ENTROPY) return -1;
  for (size_t i = 0; i < length; i++) {
    int high = hex_value(hex[2 * i]);
    int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return -1;
    pool.buf[i] = (unsigned char)(high * 16 + low);
  }
  pool.entropy_count = (int)length * 8;
  pool.buf_size = (int)length;
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = ioctl(fd, RNDADDENTROPY, &pool);
  if (rc == 0) rc = ioctl(fd, RNDRESEEDCRNG);
  close(fd);
  return rc;
}

/* Writes a file whole under a temporary name, then renames it into place. */
static int write_file(const char* path, const char* data, size_t length, mode_t mode) {
  char temporary[700]; /* longer than any path the agent builds (a home's .ssh file) */
  if (snprintf(temporary, sizeof(temporary), "%s.new", path) >= (int)sizeof(temporary)) return -1;
  int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < length) {
    ssize_t put = write(fd, data + done, length - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      close(fd);
      return -1;
    }
    done += (size_t)put;
  }
  if (fchmod(fd, mode) != 0 || close(fd) != 0) return -1;
  return rename(temporary, path);
}

static int valid_hostname(const char* name) {
  if (name[0] == '\0' || name[0] == '-' || strlen(name) > 64) return 0;
  for (const char* c = name; *c; c++) {
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '-' || *c == '.')) {
      return 0;
    }
  }
  return 1;
}

static int set_hostname(const char* name) {
  char hosts[256];
  int length = snprintf(hosts, sizeof(hosts),
                        "127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost "
                        "ip6-loopback\n",
                        name);
  char line[80];
  int line_length = snprintf(line, sizeof(line), "%s\n", name);
  if (sethostname(name, strlen(name)) != 0) return -1;
  if (write_file("/etc/hostname", line, (size_t)line_length, 0644) != 0) return -1;
  return write_file("/etc/hosts", hosts, (size_t)length, 0644);
}

/* Home, uid and gid of `user`, read from /etc/passwd (a static binary has no NSS). Fields may be
 * empty (a user without a comment), so they are split with strsep, not scanned. */
static int find_user(const char* user, char* home, size_t home_size, uid_t* uid, gid_t* gid) {
  FILE* passwd = fopen("/etc/passwd", "r");
  if (passwd == NULL) return -1;
  char row[1024];
  int found = -1;
  while (found != 0 && fgets(row, sizeof(row), passwd) != NULL) {
    row[strcspn(row, "\n")] = '\0';
    char* rest = row;
    char* fields[7];
    int count = 0;
    while (count < 7 && rest != NULL) fields[count++] = strsep(&rest, ":");
    if (count < 6 || strcmp(fields[0], user) != 0 || strlen(fields[5]) >= home_size) continue;
    strcpy(home, fields[5]);
    *uid = (uid_t)strtoul(fields[2], NULL, 10);
    *gid = (gid_t)strtoul(fields[3], NULL, 10);
    found = 0;
  }
  fclose(passwd);
  return found;
}

/* Reads a small file whole into `buffer` (NUL-terminated); its length, or -1. */
static ssize_t read_small_file(const char* path, char* buffer, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t done = 0;
  ssize_t got;
  while (done + 1 < size && (got = read(fd, buffer + done, size - done - 1)) != 0) {
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) break;
    done += (size_t)got;
  }
  close(fd);
  buffer[done] = '\0';
  return (ssize_t)done;
}

/* The base64 word of the first key line in `text` (after its type and a space) into `blob`. */
static int key_blob(const char* text, char* blob, size_t size) {
  const char* type = strstr(text, "ssh-");
  if (type == NULL) return -1;
  const char* begin = strchr(type, ' ');
  if (begin == NULL) return -1;
  begin++;
  size_t length = strcspn(begin, " \n");
  if (length < 16 || length >= size) return -1;
  memcpy(blob, begin, length);
  blob[length] = '\0';
  return 0;
}

/* In `path`, the saved guest's client key `old_blob` becomes `new_blob`, whatever options the line
 * has (cloud-init's forced command for root, say); owner and mode stay. */
static void rekey_file(const char* path, const char* old_blob, const char* new_blob) {
  static char text[MAX_KEYS];
  static char updated[2 * MAX_KEYS];
  struct stat status;
  if (stat(path, &status) != 0 || read_small_file(path, text, sizeof(text)) < 0) return;
  if (strstr(text, old_blob) == NULL) return;
  size_t length = 0;
  const char* rest = text;
  const char* found;
  while ((found = strstr(rest, old_blob)) != NULL &&
         length + (size_t)(found - rest) + strlen(new_blob) < sizeof(updated)) {
    memcpy(updated + length, rest, (size_t)(found - rest));
    length += (size_t)(found - rest);
    memcpy(updated + length, new_blob, strlen(new_blob));
    length += strlen(new_blob);
    rest = found + strlen(old_blob);
  }
  size_t tail = strlen(rest);
  if (length + tail >= sizeof(updated)) return;
  memcpy(updated + length, rest, tail);
  length += tail;
  if (write_file(path, updated, length, status.st_mode & 07777) == 0) {
    if (chown(path, status.st_uid, status.st_gid) != 0) unlink(path);
  }
}

/* Cloud-init gave the saved guest's client key to more users than the login (the image's default
 * user, root with its refusal): every copy becomes the clone's key, as a cold boot would have it.
 * The login's own file (`skip`) is written whole anyway. */
static void rekey_everywhere(const char* old_blob, const char* new_blob, const char* skip) {
  FILE* passwd = fopen("/etc/passwd", "r");
  if (passwd == NULL) return;
  char row[1024];
  while (fgets(row, sizeof(row), passwd) != NULL) {
    row[strcspn(row, "\n")] = '\0';
    char* rest = row;
    char* fields[7];
    int count = 0;
    while (count < 7 && rest != NULL) fields[count++] = strsep(&rest, ":");
    if (count < 6 || fields[5][0] != '/') continue;
    char path[600];
    snprintf(path, sizeof(path), "%s/.ssh/authorized_keys", fields[5]);
    if (strcmp(path, skip) != 0) rekey_file(path, old_blob, new_blob);
  }
  fclose(passwd);
}

static const char* install_authorized_keys(const char* user, const char* keys, size_t length) {
  char home[512];
  uid_t uid = 0;
  gid_t gid = 0;
  if (find_user(user, home, sizeof(home), &uid, &gid) != 0) {
    return "error the SSH user is not in /etc/passwd\n";
  }
  char directory[600];
  char file[640];
  snprintf(directory, sizeof(directory), "%s/.ssh", home);
  snprintf(file, sizeof(file), "%s/authorized_keys", directory);
  static char old_keys[MAX_KEYS];
  char old_blob[256];
  char new_blob[256];
  if (read_small_file(file, old_keys, sizeof(old_keys)) > 0 &&
      key_blob(old_keys, old_blob, sizeof(old_blob)) == 0 &&
      key_blob(keys, new_blob, sizeof(new_blob)) == 0) {
    rekey_everywhere(old_blob, new_blob, file);
  }
  mkdir(directory, 0700);
  if (chown(directory, uid, gid) != 0) return "error cannot give the user its .ssh folder\n";
  if (write_file(file, keys, length, 0600) != 0 || chown(file, uid, gid) != 0) {
    return "error cannot write authorized_keys\n";
  }
  return NULL;
}

/* Only the new key may remain: host keys of the saved guest must not linger. */
static void remove_other_host_keys(void) {
  static const char* old_keys[] = {
      "/etc/dropbear/dropbear_rsa_host_key", "/etc/dropbear/dropbear_ecdsa_host_key",
      "/etc/ssh/ssh_host_rsa_key",           "/etc/ssh/ssh_host_rsa_key.pub",
      "/etc/ssh/ssh_host_ecdsa_key",         "/etc/ssh/ssh_host_ecdsa_key.pub",
      "/etc/ssh/ssh_host_dsa_key",           "/etc/ssh/ssh_host_dsa_key.pub"};
  for (size_t i = 0; i < sizeof(old_keys) / sizeof(old_keys[0]); i++) unlink(old_keys[i]);
}

/* The SSH server quiesce found before the image was saved: every clone has the same. */
static struct ssh_server server_at_quiesce;

static const char* apply_identity(int fd, const char* header) {
  static char keys[MAX_KEYS];
  static char dropbear_key[MAX_HOST_KEY];
  static char openssh_key[MAX_HOST_KEY];
  static char openssh_public[MAX_HOST_KEY];
  long long seconds = 0;
  long nanoseconds = 0;
  char entropy[2 * MAX_ENTROPY + 1] = "";
  char hostname[65] = "";
  char user[33] = "";
  size_t keys_length = 0;
  size_t dropbear_length = 0;
  size_t openssh_length = 0;
  size_t public_length = 0;
  if (sscanf(header, "identity %lld %ld %128s %64s %32s %zu %zu %zu %zu", &seconds, &nanoseconds,
             entropy, hostname, user, &keys_length, &dropbear_length, &openssh_length,
             &public_length) != 9 ||
      keys_length > MAX_KEYS || dropbear_length == 0 || dropbear_length > MAX_HOST_KEY ||
      openssh_length == 0 || openssh_length > MAX_HOST_KEY || public_length == 0 ||
      public_length > MAX_HOST_KEY) {
    return "error malformed identity request\n";
  }
  if (read_exact(fd, keys, keys_length) != 0 ||
      read_exact(fd, dropbear_key, dropbear_length) != 0 ||
      read_exact(fd, openssh_key, openssh_length) != 0 ||
      read_exact(fd, openssh_public, public_length) != 0) {
    return "error truncated identity request\n";
  }

  struct timespec now = {(time_t)seconds, nanoseconds};
  if (clock_settime(CLOCK_REALTIME, &now) != 0) return "error cannot set the clock\n";
  if (reseed(entropy) != 0) return "error cannot reseed the RNG\n";
  const char* failed = install_authorized_keys(user, keys, keys_length);
  if (failed != NULL) return failed;
  remove_other_host_keys();
  /* As for a cold boot's seed: a name that is no hostname (an '_' in it) leaves the old one. */
  if (valid_hostname(hostname) && set_hostname(hostname) != 0) {
    return "error cannot set the hostname\n";
  }

  /* Normally quiesce found the server before the save (and took port 22 from dropbear): looking
   * again would cost tens of milliseconds of cold code. */
  struct ssh_server found;
  const struct ssh_server* server = &server_at_quiesce;
  if (agent_ssh_listener() < 0 && server_at_quiesce.kind == SSH_SERVER_UNKNOWN) {
    find_ssh_server(&found);
    server = &found;
  }
  if (agent_ssh_listener() < 0 && server->kind == SSH_SERVER_UNKNOWN) {
    static char problem[400];
    snprintf(problem, sizeof(problem), "error no SSH server vmfest knows: %s\n",
             server->description);
    return problem;
  }
  if (agent_ssh_listener() < 0 && server->openssh) {
    if (write_file(OPENSSH_HOST_KEY, openssh_key, openssh_length, 0600) != 0 ||
        write_file(OPENSSH_HOST_KEY ".pub", openssh_public, public_length, 0644) != 0) {
      return "error cannot write the OpenSSH host key\n";
    }
  } else if (write_file(DROPBEAR_HOST_KEY, dropbear_key, dropbear_length, 0600) != 0) {
    return "error cannot write the dropbear host key\n";
  }
  if (agent_ssh_listener() >= 0) return "ok\n";
  const char* problem = NULL;
  switch (server->kind) {
    case SSH_SERVER_OPENSSH_DAEMON:
      return reload_openssh(server->pid);
    case SSH_SERVER_DROPBEAR_DAEMON:
      problem = take_over_from_dropbear(server->pid);
      break;
    case SSH_SERVER_SYSTEMD_SOCKET:
      /* quiesce stopped the server: the first connection starts one with the new key */
      problem = server == &server_at_quiesce ? NULL : stop_socket_servers();
      break;
    case SSH_SERVER_AGENT: /* served above */
    case SSH_SERVER_UNKNOWN:
      break;
  }
  return problem != NULL ? problem : "ok\n";
}

/* "ok DESCRIPTION" for a server the agent handles, "unknown DESCRIPTION" otherwise. */
static const char* describe_ssh_server(void) {
  static char answer[400];
  struct ssh_server server;
  find_ssh_server(&server);
  snprintf(answer, sizeof(answer), "%s %s\n", server.kind == SSH_SERVER_UNKNOWN ? "unknown" : "ok",
           server.description);
  return answer;
}

static const char* quiesce(int keep_cache) {
  find_ssh_server(&server_at_quiesce);
  const char* problem = NULL;
  if (server_at_quiesce.kind == SSH_SERVER_DROPBEAR_DAEMON) {
    problem = take_over_from_dropbear(server_at_quiesce.pid);
  } else if (server_at_quiesce.kind == SSH_SERVER_SYSTEMD_SOCKET) {
    problem = stop_socket_servers();
  }
  if (problem != NULL) return problem;
  sync();
  if (keep_cache) return "ok\n";
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return "error cannot open /proc/sys/vm/drop_caches\n";
  int written = (int)write(fd, "3\n", 2);
  close(fd);
  return written == 2 ? "ok\n" : "error cannot drop the page cache\n";
}

int main(void) {
  int fd = open_port();
  if (fd < 0) return 0; /* no agent port on this machine: nothing to serve */
  signal(SIGCHLD, SIG_IGN);
  ask_for_sigio(fd);
  char line[512];
  while (read_line(fd, line, sizeof(line)) == 0) {
    if (strcmp(line, "ping") == 0) {
      reply(fd, "pong\n");
    } else if (strcmp(line, "quiesce") == 0 || strcmp(line, "quiesce keep-cache") == 0) {
      reply(fd, quiesce(strcmp(line, "quiesce") != 0));
    } else if (strcmp(line, "guard on") == 0 || strcmp(line, "guard off") == 0) {
      guarded = strcmp(line, "guard on") == 0;
      reply(fd, "ok\n");
    } else if (strcmp(line, "ssh-server") == 0) {
      reply(fd, describe_ssh_server());
    } else if (strncmp(line, "identity ", 9) == 0) {
      reply(fd, apply_identity(fd, line));
    } else {
      reply(fd, "error unknown request\n");
    }
  }
  return 1;
}
