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
 *   host:  "identity SECONDS NANOSECONDS ENTROPY_HEX LENGTH\n" followed by LENGTH bytes of
 *          #cloud-config user-data (the same text as the instance's NoCloud seed)
 *   guest: "ok\n" once the clock is set, the RNG reseeded, the keys and hostname applied and
 *          sshd listens with the new host key; "error TEXT\n" otherwise.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.vmfest.agent"
#define SEED_DIR "/run/vmfest/agent-seed"
#define MAX_USER_DATA (64 * 1024)
#define MAX_ENTROPY 64

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

/* Reads exactly n bytes. While no host is connected the port reports POLLHUP: wait for one. */
static int read_exact(int fd, char* buffer, size_t n) {
  size_t done = 0;
  while (done < n) {
    struct pollfd poller = {fd, POLLIN, 0};
    if (poll(&poller, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (!(poller.revents & POLLIN)) {
      usleep(5000); /* host side closed: a short nap keeps a saved image resuming promptly */
      continue;
    }
    ssize_t got = read(fd, buffer + done, n - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return -1;
    if (got == 0) {
      usleep(5000);
      continue;
    }
    done += (size_t)got;
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

static void reply(int fd, const char* text) {
  size_t length = strlen(text);
  while (length > 0) {
    ssize_t put = write(fd, text, length);
    if (put < 0 && errno == EINTR) continue;
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

static int write_file(const char* path, const char* data, size_t length) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
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
  return close(fd);
}

static const char* apply_identity(int fd, const char* header) {
  static char user_data[MAX_USER_DATA + 1];
  long long seconds = 0;
  long nanoseconds = 0;
  char entropy[2 * MAX_ENTROPY + 1] = "";
  size_t length = 0;
  if (sscanf(header, "identity %lld %ld %128s %zu", &seconds, &nanoseconds, entropy, &length) != 4 ||
      length > MAX_USER_DATA) {
    return "error malformed identity request\n";
  }
  if (read_exact(fd, user_data, length) != 0) return "error truncated identity request\n";
  user_data[length] = '\0';

  struct timespec now = {(time_t)seconds, nanoseconds};
  if (clock_settime(CLOCK_REALTIME, &now) != 0) return "error cannot set the clock\n";
  if (reseed(entropy) != 0) return "error cannot reseed the RNG\n";

  mkdir("/run/vmfest", 0700);
  mkdir(SEED_DIR, 0700);
  if (write_file(SEED_DIR "/user-data", user_data, length) != 0 ||
      write_file(SEED_DIR "/meta-data", "", 0) != 0) {
    return "error cannot stage the identity\n";
  }
  /* The same code path as a cold boot's seed: keys, hostname; then sshd with the new host key. */
  if (system("/usr/lib/vmfest/apply-seed " SEED_DIR) != 0) return "error apply-seed failed\n";
  if (system("/usr/lib/vmfest/start-sshd restart") != 0) return "error sshd did not restart\n";
  return "ok\n";
}

int main(void) {
  int fd = open_port();
  if (fd < 0) return 0; /* no agent port on this machine: nothing to serve */
  char line[512];
  while (read_line(fd, line, sizeof(line)) == 0) {
    if (strcmp(line, "ping") == 0) {
      reply(fd, "pong\n");
    } else if (strncmp(line, "identity ", 9) == 0) {
      reply(fd, apply_identity(fd, line));
    } else {
      reply(fd, "error unknown request\n");
    }
  }
  return 1;
}
