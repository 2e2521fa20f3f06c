/* The guest's SSH server: see ssh_server.h. */
#define _GNU_SOURCE
#include "ssh_server.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTENERS 16
#define MAX_HOLDERS 16
#define MAX_UNIT_TEXT (32 * 1024)

static int ssh_listener = -1;

int agent_ssh_listener(void) { return ssh_listener; }

static int listen_on_ssh_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int on = 1;
  struct sockaddr_in address = {0};
  address.sin_family = AF_INET;
  address.sin_port = htons(22);
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
      bind(fd, (struct sockaddr*)&address, sizeof(address)) != 0 || listen(fd, 16) != 0) {
    close(fd);
    return -1;
  }
  ssh_listener = fd;
  return 0;
}

/* Children are reaped by the kernel (SIGCHLD ignored). */
void serve_ssh_connections(const sigset_t* child_mask) {
  int connection;
  while ((connection = accept4(ssh_listener, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
    pid_t child = fork();
    if (child == 0) {
      /* an ignored signal stays ignored across exec, and so does a blocked one */
      signal(SIGCHLD, SIG_DFL);
      sigprocmask(SIG_SETMASK, child_mask, NULL);
      setsid();
      if (dup2(connection, 0) == 0 && dup2(connection, 1) == 1) {
        execl("/usr/sbin/dropbear", "dropbear", "-i", "-s", "-r", DROPBEAR_HOST_KEY, (char*)NULL);
      }
      _exit(127);
    }
    close(connection); /* without a child (fork failed) the client sees the connection close */
  }
}

/* The inodes of the sockets listening on TCP port 22 (state 0A in /proc/net/tcp{,6}): none while
 * no SSH server listens; new ones once a reloaded server listens again. Returns their number. */
static int ssh_listeners(unsigned long inodes[MAX_LISTENERS]) {
  const char* tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  int count = 0;
  for (size_t t = 0; t < 2; t++) {
    FILE* table = fopen(tables[t], "r");
    if (table == NULL) continue;
    char row[512];
    while (count < MAX_LISTENERS && fgets(row, sizeof(row), table) != NULL) {
      char local[64];
      char remote[64];
      unsigned state = 0;
      unsigned long inode = 0;
      if (sscanf(row, " %*d: %63s %63s %x %*s %*s %*s %*d %*d %lu", local, remote, &state,
                 &inode) == 4 &&
          state == 0x0A) {
        const char* port = strrchr(local, ':');
        if (port != NULL && strcmp(port, ":0016") == 0) inodes[count++] = inode;
      }
    }
    fclose(table);
  }
  return count;
}

static int listening(void) {
  unsigned long inodes[MAX_LISTENERS];
  return ssh_listeners(inodes) > 0;
}

/* Waits (bounded, in 2 ms steps) until listening() equals `wanted`. */
static int await_listening(int wanted) {
  for (int i = 0; i < 1000; i++) {
    if (listening() == wanted) return 0;
    usleep(2000);
  }
  return -1;
}

static int holds_socket(const char* pid, const unsigned long* inodes, int count) {
  char path[300];
  snprintf(path, sizeof(path), "/proc/%s/fd", pid);
  DIR* descriptors = opendir(path);
  if (descriptors == NULL) return 0;
  int found = 0;
  struct dirent* fd;
  while (!found && (fd = readdir(descriptors)) != NULL) {
    char link[600];
    char target[64];
    snprintf(link, sizeof(link), "%s/%s", path, fd->d_name);
    ssize_t length = readlink(link, target, sizeof(target) - 1);
    unsigned long inode = 0;
    if (length <= 0) continue;
    target[length] = '\0';
    if (sscanf(target, "socket:[%lu]", &inode) != 1) continue;
    for (int i = 0; i < count; i++) {
      if (inodes[i] == inode) found = 1;
    }
  }
  closedir(descriptors);
  return found;
}

/* The processes holding a socket that listens on port 22 (found by the sockets' inodes among
 * every process's descriptors, whatever its parent or name), in ascending order; their number. */
static int port_holders(int pids[MAX_HOLDERS]) {
  unsigned long inodes[MAX_LISTENERS];
  int count = ssh_listeners(inodes);
  if (count == 0) return 0;
  DIR* processes = opendir("/proc");
  if (processes == NULL) return 0;
  int found = 0;
  struct dirent* entry;
  while (found < MAX_HOLDERS && (entry = readdir(processes)) != NULL) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    if (holds_socket(entry->d_name, inodes, count)) pids[found++] = atoi(entry->d_name);
  }
  closedir(processes);
  return found;
}

static void command_of(int pid, char command[64]) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/comm", pid);
  command[0] = '\0';
  FILE* file = fopen(path, "r");
  if (file == NULL) return;
  if (fgets(command, 64, file) == NULL) command[0] = '\0';
  command[strcspn(command, "\n")] = '\0';
  fclose(file);
}

/* Where systemd reads units, most important first. */
static const char* const unit_directories[] = {"/etc/systemd/system", "/run/systemd/system",
                                               "/run/systemd/generator", "/usr/lib/systemd/system",
                                               "/lib/systemd/system"};
#define UNIT_DIRECTORIES (sizeof(unit_directories) / sizeof(unit_directories[0]))

static void append_file(const char* path, char* text, size_t size) {
  FILE* file = fopen(path, "r");
  if (file == NULL) return;
  size_t length = strlen(text);
  length += fread(text + length, 1, size - length - 2, file);
  text[length++] = '\n';
  text[length] = '\0';
  fclose(file);
}

/* The text of `unit` as systemd reads it: its first file along the unit directories, then its
 * drop-ins (later settings win). Empty when there is no such unit. */
static void read_unit(const char* unit, char* text, size_t size) {
  text[0] = '\0';
  char path[512];
  for (size_t d = 0; d < UNIT_DIRECTORIES && text[0] == '\0'; d++) {
    snprintf(path, sizeof(path), "%s/%s", unit_directories[d], unit);
    append_file(path, text, size);
  }
  if (text[0] == '\0') return;
  for (size_t d = UNIT_DIRECTORIES; d-- > 0;) {
    snprintf(path, sizeof(path), "%s/%s.d", unit_directories[d], unit);
    struct dirent** drop_ins = NULL;
    int count = scandir(path, &drop_ins, NULL, alphasort);
    for (int i = 0; i < count; i++) {
      const char* name = drop_ins[i]->d_name;
      size_t length = strlen(name);
      if (length > 5 && strcmp(name + length - 5, ".conf") == 0) {
        char file[800];
        snprintf(file, sizeof(file), "%s/%s", path, name);
        append_file(file, text, size);
      }
      free(drop_ins[i]);
    }
    free(drop_ins);
  }
}

/* Calls `each` with every value assigned to `key` in the unit text, in order ("" for a reset). */
static void for_each_value(const char* text, const char* key,
                           void (*each)(const char* value, void* result), void* result) {
  size_t key_length = strlen(key);
  for (const char* line = text; *line != '\0';) {
    size_t length = strcspn(line, "\n");
    while (length > 0 && (*line == ' ' || *line == '\t')) line++, length--;
    if (length > key_length && strncmp(line, key, key_length) == 0 && line[key_length] == '=') {
      char value[256];
      size_t value_length = length - key_length - 1;
      if (value_length >= sizeof(value)) value_length = sizeof(value) - 1;
      memcpy(value, line + key_length + 1, value_length);
      value[value_length] = '\0';
      value[strcspn(value, "\r")] = '\0';
      each(value, result);
    }
    line += length;
    if (*line == '\n') line++;
  }
}

static void keep_last(const char* value, void* result) { snprintf(result, 256, "%s", value); }

/* ListenStream=22, 0.0.0.0:22, [::]:22 ...; an empty assignment resets the list. */
static void note_port_22(const char* value, void* result) {
  size_t length = strlen(value);
  int* on_22 = result;
  if (length == 0) *on_22 = 0;
  if (strcmp(value, "22") == 0 || (length > 3 && strcmp(value + length - 3, ":22") == 0)) {
    *on_22 = 1;
  }
}

/* The name of an enabled socket unit that listens on port 22 into `unit`, its text into `text`. */
static int find_socket_unit(char unit[256], char* text, size_t size) {
  static const char* const wants[] = {"/etc/systemd/system/sockets.target.wants",
                                      "/usr/lib/systemd/system/sockets.target.wants",
                                      "/lib/systemd/system/sockets.target.wants"};
  for (size_t w = 0; w < sizeof(wants) / sizeof(wants[0]); w++) {
    DIR* directory = opendir(wants[w]);
    if (directory == NULL) continue;
    struct dirent* entry;
    int found = 0;
    while (!found && (entry = readdir(directory)) != NULL) {
      size_t length = strlen(entry->d_name);
      if (length < 8 || strcmp(entry->d_name + length - 7, ".socket") != 0) continue;
      read_unit(entry->d_name, text, size);
      int on_22 = 0;
      for_each_value(text, "ListenStream", note_port_22, &on_22);
      if (on_22) {
        snprintf(unit, 256, "%s", entry->d_name);
        found = 1;
      }
    }
    closedir(directory);
    if (found) return 0;
  }
  return -1;
}

static int true_setting(const char* value) {
  return strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 || strcmp(value, "on") == 0 ||
         strcmp(value, "1") == 0;
}

/* systemd holds port 22: which program the socket unit listening there starts. */
static void describe_socket(struct ssh_server* server) {
  static char text[MAX_UNIT_TEXT];
  char socket[256];
  if (find_socket_unit(socket, text, sizeof(text)) != 0) {
    snprintf(server->description, sizeof(server->description),
             "port 22 is held by pid 1 (systemd) through no enabled socket unit the agent finds");
    return;
  }
  char accept[256] = "no";
  char service[256] = "";
  for_each_value(text, "Accept", keep_last, accept);
  for_each_value(text, "Service", keep_last, service);
  const int per_connection = true_setting(accept);
  if (service[0] == '\0') {
    snprintf(service, sizeof(service), "%.*s%s", (int)(strlen(socket) - 7), socket,
             per_connection ? "@.service" : ".service");
  }
  read_unit(service, text, sizeof(text));
  char start[256] = "";
  for_each_value(text, "ExecStart", keep_last, start);
  const char* program = start + strspn(start, "-@+!:");
  char path[256];
  snprintf(path, sizeof(path), "%.*s", (int)strcspn(program, " \t"), program);
  const char* name = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
  server->openssh = strcmp(name, "sshd") == 0;
  if (server->openssh || strcmp(name, "dropbear") == 0) server->kind = SSH_SERVER_SYSTEMD_SOCKET;
  snprintf(server->description, sizeof(server->description),
           "%.80s started by %.80s (Accept=%s) of pid 1 (systemd) through %.80s",
           path[0] != '\0' ? path : "no program", socket, per_connection ? "yes" : "no", service);
}

void find_ssh_server(struct ssh_server* server) {
  memset(server, 0, sizeof(*server));
  if (ssh_listener >= 0) {
    server->kind = SSH_SERVER_AGENT;
    server->pid = getpid();
    snprintf(server->description, sizeof(server->description),
             "dropbear -i per connection, run by the agent (pid %d) on port 22", server->pid);
    return;
  }
  int pids[MAX_HOLDERS];
  int count = port_holders(pids);
  if (count == 0) {
    snprintf(server->description, sizeof(server->description), "nothing listens on port 22");
    return;
  }
  server->pid = pids[0];
  if (pids[0] == 1) {
    describe_socket(server);
    return;
  }
  char command[64];
  command_of(pids[0], command);
  if (strcmp(command, "sshd") == 0) {
    server->kind = SSH_SERVER_OPENSSH_DAEMON;
    server->openssh = 1;
  } else if (strcmp(command, "dropbear") == 0) {
    server->kind = SSH_SERVER_DROPBEAR_DAEMON;
  }
  snprintf(server->description, sizeof(server->description), "%s daemon%s (pid %d) on port 22",
           command[0] != '\0' ? command : "an unnamed",
           server->kind == SSH_SERVER_UNKNOWN ? ", neither sshd nor dropbear," : "", pids[0]);
}

const char* take_over_from_dropbear(int pid) {
  if (pid != 0) {
    kill(pid, SIGTERM);
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++) usleep(2000);
    if (kill(pid, 0) == 0) return "error the old dropbear does not stop\n";
    if (await_listening(0) != 0) return "error something else listens on port 22\n";
  }
  return listen_on_ssh_port() == 0 ? NULL : "error the agent cannot listen on port 22\n";
}

const char* reload_openssh(int pid) {
  static char problem[160];
  unsigned long before[MAX_LISTENERS];
  int old_count = ssh_listeners(before);
  if (kill(pid, SIGHUP) != 0) return "error cannot signal sshd\n";
  int count = 0;
  for (int i = 0; i < 5000; i++) {
    unsigned long now[MAX_LISTENERS];
    count = ssh_listeners(now);
    int renewed = count > 0;
    for (int a = 0; renewed && a < count; a++) {
      for (int b = 0; b < old_count; b++) {
        if (now[a] == before[b]) renewed = 0;
      }
    }
    if (renewed) return "ok\n";
    usleep(2000);
  }
  snprintf(problem, sizeof(problem),
           "error sshd (pid %d, %s) did not listen again after its reload (sockets on port 22: "
           "%d before, %d now)\n",
           pid, kill(pid, 0) == 0 ? "alive" : "gone", old_count, count);
  return problem;
}

/* A process that ended but is not reaped yet (systemd's child) counts as gone. */
static int running(int pid) {
  char path[64];
  char stat[256] = "";
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* file = fopen(path, "r");
  if (file == NULL) return 0;
  if (fgets(stat, sizeof(stat), file) == NULL) stat[0] = '\0';
  fclose(file);
  const char* state = strrchr(stat, ')');
  return state != NULL && state[1] == ' ' && state[2] != 'Z' && state[2] != 'X';
}

const char* stop_socket_servers(void) {
  int pids[MAX_HOLDERS];
  int count = port_holders(pids);
  for (int i = 0; i < count; i++) {
    if (pids[i] != 1) kill(pids[i], SIGTERM);
  }
  for (int i = 0; i < count; i++) {
    for (int wait = 0; pids[i] != 1 && wait < 1000 && running(pids[i]); wait++) usleep(2000);
    if (pids[i] != 1 && running(pids[i])) {
      return "error the SSH server the systemd socket started does not stop\n";
    }
  }
  return NULL;
}
