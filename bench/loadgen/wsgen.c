/*
 * wsgen: a WebSocket load generator in C for the wsgiws benchmark suite.
 *
 * The scenarios where the Node.js generator (loadgen.mjs) itself fills its core
 * are done here at a fraction of its CPU time per unit: `broadcast` (1,000
 * clients counting the frames of a group send) and `handshake` (open, close
 * handshake, TCP close, 32 in parallel), and on request (run.py --generator c)
 * `echo` without permessage-deflate. Same options, same protocol and the same
 * JSON lines on stdout as loadgen.mjs, so bench/run.py reads either.
 *
 * Plain C99 + POSIX + Linux epoll, no library beyond libc. One thread, every
 * socket non-blocking. Loopback only: the target host must be 127.x.x.x,
 * localhost or [::1]; anything else is refused before a socket is made.
 * Every phase is bounded in count and in time, and SIGALRM ends the process
 * after (3 x duration + connect-timeout + 30) s whatever happens.
 *
 *   cc -O2 -o wsgen wsgen.c
 *   wsgen --scenario echo|broadcast|handshake --url ws://127.0.0.1:PORT/path [options]
 *
 * Output: {"event":"measure_start"} / {"event":"measure_end"} around the
 * measured phase, then {"event":"result", ...}. Errors: a line starting with
 * "wsgen:" on stderr, exit status 2 (3: global time limit).
 *
 * The opening handshake is checked in full: status 101, and the
 * Sec-WebSocket-Accept header equal to base64(SHA-1(key + GUID)) (RFC 6455
 * section 4.2.2; the SHA-1 below follows FIPS 180-4).
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ options ---- */

struct opts {
    char scenario[32];
    char url[512];
    long connections, size, count, warmup, connect_batch, parallel, window, deflate;
    long bcast_count, bcast_warmup, read_batch;
    double duration, connect_timeout;
};

static struct opts O = {"echo", "", 1, 64, 1000, 100, 50, 32, 1, 0, 100, 5, 1, 10.0, 10.0};

/* Options of loadgen.mjs that these scenarios do not use: accepted, ignored. */
static const char *IGNORED[] = {"hold", "rounds", "groups", "chat-count", "chat-warmup",
                                "rate", NULL};

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static double num_arg(const char *key, const char *v) {
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || d != d || d < 0) die("bad number for --%s: %s", key, v);
    return d;
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) die("unexpected argument %s", a);
        if (i + 1 >= argc) die("missing value for %s", a);
        const char *k = a + 2, *v = argv[i + 1];
        if (!strcmp(k, "scenario")) snprintf(O.scenario, sizeof O.scenario, "%s", v);
        else if (!strcmp(k, "url")) {
            if (strlen(v) >= sizeof O.url) die("url too long");
            strcpy(O.url, v);
        }
        else if (!strcmp(k, "connections")) O.connections = (long)num_arg(k, v);
        else if (!strcmp(k, "size")) O.size = (long)num_arg(k, v);
        else if (!strcmp(k, "count")) O.count = (long)num_arg(k, v);
        else if (!strcmp(k, "warmup")) O.warmup = (long)num_arg(k, v);
        else if (!strcmp(k, "connect-batch")) O.connect_batch = (long)num_arg(k, v);
        else if (!strcmp(k, "parallel")) O.parallel = (long)num_arg(k, v);
        else if (!strcmp(k, "window")) O.window = (long)num_arg(k, v);
        else if (!strcmp(k, "deflate")) O.deflate = (long)num_arg(k, v);
        else if (!strcmp(k, "bcast-count")) O.bcast_count = (long)num_arg(k, v);
        else if (!strcmp(k, "bcast-warmup")) O.bcast_warmup = (long)num_arg(k, v);
        else if (!strcmp(k, "read-batch")) O.read_batch = (long)num_arg(k, v);
        else if (!strcmp(k, "duration")) O.duration = num_arg(k, v);
        else if (!strcmp(k, "connect-timeout")) O.connect_timeout = num_arg(k, v);
        else {
            int known = 0;
            for (const char **p = IGNORED; *p; p++) known |= !strcmp(k, *p);
            if (!known) die("unknown option %s", a);
            num_arg(k, v);
        }
    }
    if (O.connect_batch < 1) O.connect_batch = 1;
    if (O.parallel < 1) O.parallel = 1;
    if (O.read_batch < 1) O.read_batch = 1;
    if (O.window < 1) O.window = 1;
}

/* ---------------------------------------------------------------- url ---- */

static struct sockaddr_storage ADDR;
static socklen_t ADDR_LEN;
static char HOST_HDR[300];
static char PATH[400];

/* Parses ws://HOST[:PORT][/path]; refuses any host that is not loopback. */
static void parse_url(const char *url) {
    if (strncmp(url, "ws://", 5) != 0) die("only ws:// URLs: %s", url);
    const char *p = url + 5, *host_end, *host_start = p;
    char host[256];
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end) die("bad URL %s", url);
        host_start = p + 1;
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hl = (size_t)(host_end - host_start);
    if (hl == 0 || hl >= sizeof host) die("bad host in %s", url);
    memcpy(host, host_start, hl);
    host[hl] = 0;
    long port = 80;
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) die("bad port in %s", url);
        p = end;
    }
    snprintf(PATH, sizeof PATH, "%s", *p == '/' ? p : "/");
    snprintf(HOST_HDR, sizeof HOST_HDR, "%.*s", (int)(p - (url + 5)), url + 5);

    memset(&ADDR, 0, sizeof ADDR);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ADDR;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ADDR;
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) die("refusing non-loopback target %s", url);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        ADDR_LEN = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) die("refusing non-loopback target %s", url);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        ADDR_LEN = sizeof *a6;
    } else {
        die("refusing non-loopback target %s", url);
    }
}

/* --------------------------------------------------------------- misc ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double sys_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void emit(const char *line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static uint64_t rng_state;

static uint32_t rnd32(void) { /* xorshift64*, seeded from /dev/urandom */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void seed_rng(void) {
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, &rng_state, sizeof rng_state) != (ssize_t)sizeof rng_state)
        rng_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    if (fd >= 0) close(fd);
    if (!rng_state) rng_state = 88172645463325252ULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* loadgen.mjs's percentile(): the value at ceil(p% of n), 1-based. */
static double percentile(const double *sorted, long n, double p) {
    double x = p / 100.0 * (double)n;
    long c = (long)x;
    if ((double)c < x) c++;
    c -= 1;
    if (c < 0) c = 0;
    if (c > n - 1) c = n - 1;
    return sorted[c];
}

/* ---------------------------------------------------- SHA-1 and base64 ---- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char block[64];
    size_t total = ((len + 8) / 64 + 1) * 64; /* message + 0x80 + length, padded */
    for (size_t off = 0; off < total; off += 64) {
        for (size_t i = 0; i < 64; i++) {
            size_t j = off + i;
            if (j < len) block[i] = msg[j];
            else if (j == len) block[i] = 0x80;
            else if (j >= total - 8) block[i] = (unsigned char)(((uint64_t)len * 8) >> (8 * (total - 1 - j)));
            else block[i] = 0;
        }
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = T[v >> 18 & 63];
        out[o++] = T[v >> 12 & 63];
        out[o++] = i + 1 < len ? T[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? T[v & 63] : '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------- connections ---- */

#define RBUF 4096 /* handshake response and small frames (join, close) */

enum state { C_FREE, C_CONNECTING, C_RESPONSE, C_OPEN, C_CLOSING, C_EOF_WAIT };

struct conn {
    int fd;
    enum state st;
    int idx;
    double t0;            /* handshake scenario: when this cycle started */
    double deadline;      /* of the current step (connect, close) */
    char accept[32];      /* expected Sec-WebSocket-Accept */
    size_t rlen;          /* bytes in rbuf */
    unsigned char *rbuf;  /* RBUF bytes */
    /* broadcast counting */
    uint64_t bytes;
    double first, last;
    long lowat;           /* its SO_RCVLOWAT */
};

static int EP;
static char REQ_HEAD[1024];
static size_t REQ_HEAD_LEN;

static void build_request_head(void) {
    int n = snprintf(REQ_HEAD, sizeof REQ_HEAD,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
                     PATH, HOST_HDR);
    if (n < 0 || (size_t)n >= sizeof REQ_HEAD - 64) die("request too long");
    REQ_HEAD_LEN = (size_t)n;
}

static void ep_set(struct conn *c, uint32_t events, int op) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(EP, op, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->st = C_FREE;
}

/* Writes all of buf (small: a request or a control frame), else -1. */
static int send_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    double give_up = now_s() + 2.0;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            if (now_s() > give_up) return -1; /* a tiny write to a fresh socket: never here */
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

/* A masked client frame (FIN set) with a random non-zero key. */
static size_t client_frame(unsigned char *out, int opcode, const void *payload, size_t len) {
    size_t h = 2;
    out[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) out[1] = (unsigned char)(0x80 | len);
    else { /* control and command frames only: < 64 KiB */
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        h = 4;
    }
    uint32_t key;
    do key = rnd32(); while (!key);
    memcpy(out + h, &key, 4);
    const unsigned char *m = out + h, *p = payload;
    for (size_t i = 0; i < len; i++) out[h + 4 + i] = p[i] ^ m[i & 3];
    return h + 4 + len;
}

static int send_frame(struct conn *c, int opcode, const void *payload, size_t len) {
    unsigned char f[256];
    if (len > sizeof f - 14) return -1;
    return send_all(c->fd, f, client_frame(f, opcode, payload, len));
}

static int send_close(struct conn *c) {
    unsigned char code[2] = {0x03, 0xe8}; /* 1000 */
    return send_frame(c, 0x8, code, 2);
}

/* Opens the TCP connection; the request goes out once it is writable. */
static int conn_start(struct conn *c) {
    int fd = socket(ADDR.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->rlen = 0;
    c->deadline = now_s() + O.connect_timeout;
    if (connect(fd, (struct sockaddr *)&ADDR, ADDR_LEN) < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        return -1;
    }
    c->st = C_CONNECTING;
    ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

/* The connection is writable: send the upgrade request. */
static int conn_send_request(struct conn *c) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) return -1;
    unsigned char raw[16], hash[20];
    char key[32], buf[sizeof REQ_HEAD + 64], both[64 + 40];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rnd32();
        memcpy(raw + i, &r, 4);
    }
    base64(raw, 16, key);
    int bl = snprintf(both, sizeof both, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((unsigned char *)both, (size_t)bl, hash);
    base64(hash, 20, c->accept);
    memcpy(buf, REQ_HEAD, REQ_HEAD_LEN);
    int n = snprintf(buf + REQ_HEAD_LEN, sizeof buf - REQ_HEAD_LEN, "%s\r\n\r\n", key);
    if (send_all(c->fd, buf, REQ_HEAD_LEN + (size_t)n) < 0) return -1;
    c->st = C_RESPONSE;
    ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
    return 0;
}

/* Finds header `name` (case-insensitive) in the response head; value in *v. */
static int find_header(const char *head, const char *name, const char **v, size_t *vl) {
    size_t nl = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end) return 0;
        if ((size_t)(end - line) > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
            const char *s = line + nl + 1;
            while (s < end && (*s == ' ' || *s == '\t')) s++;
            const char *e = end;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
            *v = s;
            *vl = (size_t)(e - s);
            return 1;
        }
        line = end;
    }
    return 0;
}

/*
 * Reads the handshake response. Returns 1 when the connection is open (bytes
 * after the head stay in rbuf), 0 when more is needed, -1 on failure (with
 * *why set).
 */
static int conn_read_response(struct conn *c, const char **why) {
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen, 0);
    if (n == 0) { *why = "connection closed during the handshake"; return -1; }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return 0;
        *why = strerror(errno);
        return -1;
    }
    c->rlen += (size_t)n;
    c->rbuf[c->rlen] = 0;
    char *end = strstr((char *)c->rbuf, "\r\n\r\n");
    if (!end) {
        if (c->rlen >= RBUF - 1) { *why = "handshake response too long"; return -1; }
        return 0;
    }
    end[2] = 0; /* head = through the last header line's CRLF */
    const char *head = (const char *)c->rbuf, *v;
    size_t vl;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) { *why = "status is not 101"; return -1; }
    if (!find_header(head, "Sec-WebSocket-Accept", &v, &vl)) { *why = "no Sec-WebSocket-Accept"; return -1; }
    if (vl != strlen(c->accept) || memcmp(v, c->accept, vl) != 0) { *why = "wrong Sec-WebSocket-Accept"; return -1; }
    size_t head_len = (size_t)(end + 4 - (char *)c->rbuf);
    memmove(c->rbuf, c->rbuf + head_len, c->rlen - head_len);
    c->rlen -= head_len;
    c->st = C_OPEN;
    return 1;
}

/*
 * One complete server frame at the start of rbuf (payloads < RBUF only).
 * Returns its total length and sets *op / *pl / *plen, 0 when incomplete,
 * -1 when it is not a valid unmasked server frame of that size.
 */
static long frame_at(const unsigned char *b, size_t n, int *op, const unsigned char **pl, size_t *plen) {
    if (n < 2) return 0;
    if (b[1] & 0x80) return -1;    /* servers do not mask */
    if (b[0] & 0x70) return -1;    /* no extension was negotiated: RSV bits clear */
    if ((b[0] & 0x88) == 0x08) return -1; /* a control frame is never fragmented */
    size_t len = b[1] & 0x7f, h = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = (size_t)b[2] << 8 | b[3];
        h = 4;
    } else if (len == 127) {
        return -1;
    }
    if (h + len >= RBUF) return -1;
    if (n < h + len) return 0;
    *op = b[0];
    *pl = b + h;
    *plen = len;
    return (long)(h + len);
}

static void consume(struct conn *c, long k) {
    memmove(c->rbuf, c->rbuf + k, c->rlen - (size_t)k);
    c->rlen -= (size_t)k;
}

/* ------------------------------------------------------------ results ---- */

static void jnum(char **p, const char *key, double v) {
    if (isfinite(v)) *p += sprintf(*p, ",\"%s\":%.10g", key, v);
    else *p += sprintf(*p, ",\"%s\":null", key); /* as JSON.stringify does */
}
static void jint(char **p, const char *key, long long v) { *p += sprintf(*p, ",\"%s\":%lld", key, v); }
static void jbool(char **p, const char *key, int v) { *p += sprintf(*p, ",\"%s\":%s", key, v ? "true" : "false"); }
static void jnull_or(char **p, const char *key, int ok, double v) {
    if (ok) jnum(p, key, v);
    else *p += sprintf(*p, ",\"%s\":null", key);
}

/* ---------------------------------------------------------- broadcast ---- */
/*
 * Protocol (bench/servers: same for every server under test):
 *   client -> "join"                 the server adds the connection to group
 *                                    "g" and replies "joined" to it only
 *   client -> "go <round> <n> <sz>"  the server sends n binary messages of sz
 *                                    bytes to the whole group; byte 0 of each
 *                                    is <round>
 * Each client counts the bytes it receives: every frame of a round has the
 * same length, so at each frame boundary it checks the first header byte
 * (0x82: FIN, binary) and the round id after the header, as loadgen.mjs does
 * in its raw-socket mode.
 */

static struct conn *CONNS;
static long NCONN;
static struct epoll_event EVS[1024];

/* Opens O.connections connections, at most connect_batch handshakes at once. */
static void connect_all(long n) {
    long started = 0, opened = 0, inflight = 0;
    const char *why = NULL;
    while (opened < n) {
        while (started < n && inflight < O.connect_batch) {
            struct conn *c = &CONNS[started];
            if (conn_start(c) < 0) die("connection %ld of %ld: %s", started + 1, n, strerror(errno));
            started++;
            inflight++;
        }
        double t = now_s(), next = t + 1.0;
        for (long i = 0; i < started; i++)
            if (CONNS[i].st == C_CONNECTING || CONNS[i].st == C_RESPONSE) {
                if (CONNS[i].deadline < t) die("connection %ld of %ld: opening handshake timed out", i + 1, n);
                if (CONNS[i].deadline < next) next = CONNS[i].deadline;
            }
        int k = epoll_wait(EP, EVS, 1024, (int)((next - t) * 1000) + 1);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int e = 0; e < k; e++) {
            struct conn *c = EVS[e].data.ptr;
            if (c->st == C_CONNECTING) {
                if (conn_send_request(c) < 0) die("connection %d of %ld: connect failed", c->idx + 1, n);
            } else if (c->st == C_RESPONSE) {
                int r = conn_read_response(c, &why);
                if (r < 0) die("connection %d of %ld: %s", c->idx + 1, n, why);
                if (r > 0) {
                    opened++;
                    inflight--;
                }
            } else if (c->st == C_OPEN) { /* early data: kept for join_all */
                if (c->rlen >= RBUF - 1) die("connection %d: too much data before joining", c->idx + 1);
                ssize_t got = recv(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen, 0);
                if (got == 0) die("connection %d: closed before joining", c->idx + 1);
                if (got > 0) c->rlen += (size_t)got;
            }
        }
    }
}

/* Sends "join" on every connection and waits for every "joined". */
static void join_all(void) {
    static const char join[] = "join";
    long acks = 0;
    for (long i = 0; i < NCONN; i++)
        if (send_frame(&CONNS[i], 0x1, join, 4) < 0) die("sending join: %s", strerror(errno));
    double deadline = now_s() + O.connect_timeout;
    char *joined = calloc((size_t)NCONN, 1);
    if (!joined) die("out of memory");
    /* A reply may already sit in rbuf, behind the handshake response. */
    for (;;) {
        for (long i = 0; i < NCONN; i++) {
            struct conn *c = &CONNS[i];
            int op;
            const unsigned char *pl;
            size_t plen;
            long k;
            while (!joined[i] && (k = frame_at(c->rbuf, c->rlen, &op, &pl, &plen)) != 0) {
                if (k < 0) die("connection %ld: bad frame while joining", i + 1);
                if ((op & 0x0f) == 0x1) {
                    if (plen != 6 || memcmp(pl, "joined", 6) != 0)
                        fprintf(stderr, "unexpected join reply %.*s\n", (int)plen, (const char *)pl);
                    joined[i] = 1;
                    acks++;
                } else if ((op & 0x0f) == 0x8) {
                    die("connection %ld: closed by the server while joining", i + 1);
                }
                consume(c, k); /* anything else (a ping) is passed over */
            }
        }
        if (acks == NCONN) break;
        double t = now_s();
        if (t > deadline) die("join timed out");
        int k = epoll_wait(EP, EVS, 1024, (int)((deadline - t) * 1000) + 1);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int e = 0; e < k; e++) {
            struct conn *c = EVS[e].data.ptr;
            if (c->rlen >= RBUF - 1) die("connection %d: too much data while joining", c->idx + 1);
            ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen, 0);
            if (n == 0) die("connection %d: closed while joining", c->idx + 1);
            if (n < 0 && errno != EAGAIN && errno != EINTR) die("recv: %s", strerror(errno));
            if (n > 0) c->rlen += (size_t)n;
        }
    }
    free(joined);
    for (long i = 0; i < NCONN; i++)
        if (CONNS[i].rlen) die("connection %ld: unexpected data after joining", i + 1);
}

struct round_result {
    long long deliveries, errors, wakeups, reads;
    int timed_out;
    double t0;
};

static unsigned char RXBUF[1 << 16];

/* Wake-ups for `c` only once `bytes` bytes are readable (SO_RCVLOWAT). */
static void set_lowat(struct conn *c, long bytes) {
    if (bytes < 1) bytes = 1;
    if (bytes == c->lowat) return;
    int v = (int)bytes;
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v) == 0) c->lowat = bytes;
}

struct round {
    int id;
    long hdr;
    uint64_t frame_len, target;
    long done;
    struct round_result r;
};

/* Counts `m` bytes just read by `c` at time `t` and checks the frame
 * boundaries among them. */
static void count_chunk(struct round *rd, struct conn *c, uint64_t m, double t) {
    uint64_t fl = rd->frame_len;
    if (c->bytes == 0) c->first = t;
    uint64_t into = c->bytes % fl;
    for (uint64_t j = (fl - into) % fl; j < m; j += fl)
        if (RXBUF[j] != 0x82) rd->r.errors++;
    for (uint64_t j = (fl + (uint64_t)rd->hdr - into) % fl; j < m; j += fl)
        if (RXBUF[j] != (unsigned char)rd->id) rd->r.errors++;
    c->bytes += m;
    if (c->bytes >= rd->target && c->last == 0) {
        c->last = t;
        if (c->bytes > rd->target) rd->r.errors++;
        rd->done++;
        set_lowat(c, 1);
    } else if (O.read_batch > 1 && c->bytes < rd->target) {
        /* The next wake-up: after `read_batch` more frames, or at the round's
         * last byte, whichever comes first. Off by default (--read-batch 1):
         * while fewer than SO_RCVLOWAT bytes are unread, Linux ACKs every
         * segment at once, which costs a server that writes one frame per
         * send about a fifth of its broadcast rate. */
        uint64_t want = (uint64_t)O.read_batch * fl, left = rd->target - c->bytes;
        set_lowat(c, (long)(want < left ? want : left));
    }
}

/* Reads what `c` has. 1: read some, 0: nothing there, -1: closed or failed
 * (its missing deliveries count as errors). */
static int read_some(struct round *rd, struct conn *c, double t) {
    ssize_t got = recv(c->fd, RXBUF, sizeof RXBUF, MSG_DONTWAIT);
    if (got > 0) {
        count_chunk(rd, c, (uint64_t)got, t);
        return 1;
    }
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    epoll_ctl(EP, EPOLL_CTL_DEL, c->fd, NULL);
    rd->r.errors++;
    if (c->last == 0) {
        c->last = -1;
        rd->done++;
    }
    return -1;
}

static struct round_result bcast_round(int round_id, long n, double timeout_s) {
    struct round rd;
    memset(&rd, 0, sizeof rd);
    rd.id = round_id;
    rd.hdr = O.size >= 65536 ? 10 : O.size > 125 ? 4 : 2;
    rd.frame_len = (uint64_t)(rd.hdr + O.size);
    rd.target = (uint64_t)n * rd.frame_len;
    for (long i = 0; i < NCONN; i++) {
        CONNS[i].bytes = 0;
        CONNS[i].first = CONNS[i].last = 0;
        set_lowat(&CONNS[i], 1); /* the first frame wakes each client */
    }
    char go[96];
    int gl = snprintf(go, sizeof go, "go %d %ld %ld", round_id, n, O.size);
    rd.r.t0 = now_s();
    double deadline = rd.r.t0 + timeout_s;
    if (send_frame(&CONNS[0], 0x1, go, (size_t)gl) < 0) die("sending go: %s", strerror(errno));
    while (rd.done < NCONN) {
        double t = now_s();
        if (t >= deadline) {
            rd.r.timed_out = 1;
            /* Count what the kernel holds below a client's wake-up mark. */
            for (long i = 0; i < NCONN; i++) {
                struct conn *c = &CONNS[i];
                while (c->last == 0 && read_some(&rd, c, t) > 0) {}
            }
            break;
        }
        int k = epoll_wait(EP, EVS, 1024, (int)((deadline - t) * 1000) + 1);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        if (k <= 0) continue;
        rd.r.wakeups++;
        rd.r.reads += k;
        t = now_s(); /* one clock read per wake-up: every event of it is this instant */
        for (int e = 0; e < k; e++) read_some(&rd, EVS[e].data.ptr, t);
    }
    for (long i = 0; i < NCONN; i++) {
        if (CONNS[i].last < 0) CONNS[i].last = 0;
        rd.r.deliveries += (long long)(CONNS[i].bytes / rd.frame_len);
    }
    return rd.r;
}

/* Close handshake on every connection, bounded to 2 s in all. */
static void close_all(void) {
    long open = 0;
    for (long i = 0; i < NCONN; i++) {
        struct conn *c = &CONNS[i];
        if (c->fd < 0) continue;
        set_lowat(c, 1); /* a client that is still waiting for a round's end */
        if (send_close(c) < 0) conn_close(c);
        else {
            c->st = C_CLOSING;
            open++;
        }
    }
    double deadline = now_s() + 2.0;
    while (open > 0) {
        double t = now_s();
        if (t >= deadline) break;
        int k = epoll_wait(EP, EVS, 1024, (int)((deadline - t) * 1000) + 1);
        for (int e = 0; e < k; e++) {
            struct conn *c = EVS[e].data.ptr;
            if (c->fd < 0) continue;
            ssize_t n = recv(c->fd, RXBUF, sizeof RXBUF, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_close(c);
                open--;
            }
        }
    }
    for (long i = 0; i < NCONN; i++) conn_close(&CONNS[i]);
}

static void run_broadcast(void) {
    NCONN = O.connections;
    if (NCONN < 1) die("--connections must be >= 1");
    if (O.size < 5 || O.size > (1 << 20)) die("--size must be 5..1048576");
    CONNS = calloc((size_t)NCONN, sizeof *CONNS);
    unsigned char *bufs = malloc((size_t)NCONN * RBUF);
    if (!CONNS || !bufs) die("out of memory");
    for (long i = 0; i < NCONN; i++) {
        CONNS[i].fd = -1;
        CONNS[i].idx = (int)i;
        CONNS[i].rbuf = bufs + i * RBUF;
        CONNS[i].lowat = 1;
    }
    double tc = now_s();
    connect_all(NCONN);
    double connect_s = now_s() - tc;
    join_all();

    if (O.bcast_warmup > 0) bcast_round(1, O.bcast_warmup, O.duration < 10 ? O.duration : 10);

    emit("{\"event\":\"measure_start\"}");
    double cpu0 = cpu_s(), sys0 = sys_s();
    struct round_result r = bcast_round(2, O.bcast_count, O.duration);
    double cpu = cpu_s() - cpu0, sys = sys_s() - sys0;
    emit("{\"event\":\"measure_end\"}");
    close_all();

    long long expected = (long long)NCONN * O.bcast_count;
    double last = 0, first = 0;
    double *completion = malloc((size_t)NCONN * sizeof(double));
    long ndone = 0;
    for (long i = 0; i < NCONN; i++) {
        struct conn *c = &CONNS[i];
        if (c->last > 0) {
            if (c->last > last) last = c->last;
            completion[ndone++] = (c->last - r.t0) * 1e6;
        }
        if (c->first > 0 && (first == 0 || c->first < first)) first = c->first;
    }
    if (ndone == 0) last = now_s();
    qsort(completion, (size_t)ndone, sizeof(double), cmp_double);
    double wall = last - r.t0;
    static char out[4096];
    char *p = out;
    p += sprintf(p, "{\"event\":\"result\",\"generator\":\"wsgen (C)\",\"scenario\":\"broadcast\"");
    jint(&p, "connections", NCONN);
    jint(&p, "size", O.size);
    jint(&p, "messages", O.bcast_count);
    jnum(&p, "connect_s", connect_s);
    jint(&p, "expected_deliveries", expected);
    jint(&p, "deliveries", r.deliveries);
    jint(&p, "errors", r.errors + (expected - r.deliveries));
    jbool(&p, "timed_out", r.timed_out);
    jnum(&p, "wall_s", wall);
    jnum(&p, "deliveries_per_s", (double)r.deliveries / wall);
    jnull_or(&p, "first_delivery_us", first > 0, (first - r.t0) * 1e6);
    jnum(&p, "last_delivery_us", wall * 1e6);
    jnull_or(&p, "client_done_p50_us", ndone > 0, ndone ? percentile(completion, ndone, 50) : 0);
    p += sprintf(p, ",\"receive_mode\":\"raw-socket\"");
    jnull_or(&p, "loadgen_cpu_us_per_delivery", r.deliveries > 0,
             r.deliveries ? cpu * 1e6 / (double)r.deliveries : 0);
    jnum(&p, "loadgen_cpu_s", cpu);
    jnum(&p, "loadgen_cpu_frac", cpu / wall);
    jint(&p, "loadgen_wakeups", r.wakeups);
    jint(&p, "loadgen_reads", r.reads);
    jnum(&p, "loadgen_sys_s", sys);
    strcpy(p, "}");
    emit(out);
    free(completion);
}

/* ---------------------------------------------------------- handshake ---- */
/*
 * `parallel` slots each: open a connection (opening handshake, checked),
 * send a masked close frame (1000), read the server's close frame, then wait
 * for the server to close the TCP connection (half-closing ours once the close
 * frames are exchanged, as ws does), and start again, until `count` cycles are
 * done or the deadline passes (then 5 s of grace for the cycles under way).
 * A cycle fails on a bad handshake, a close code other than 1000 (or none), a
 * frame that is not valid, or a step that takes over connect-timeout.
 */

struct hs_result {
    long done, errors;
    int timed_out;
    double last;
    double *times; /* µs per cycle, `done` of them */
};

static char FIRST_ERROR[128]; /* why the first failed cycle of the phase failed */

static void note_error(const char *why) {
    if (!FIRST_ERROR[0]) snprintf(FIRST_ERROR, sizeof FIRST_ERROR, "%s", why);
}

static void hs_fail(struct conn *c, struct hs_result *r, const char *why) {
    note_error(why);
    conn_close(c);
    r->errors++;
}

static struct hs_result handshake_phase(long count, double deadline, long cap) {
    struct hs_result r = {0, 0, 0, now_s(), malloc((size_t)(cap > 0 ? cap : 1) * sizeof(double))};
    if (!r.times) die("out of memory");
    long started = 0, active = 0;
    double hard = deadline + 5.0;
    const char *why;
    for (;;) {
        double t = now_s();
        for (long i = 0; i < NCONN; i++) {
            struct conn *c = &CONNS[i];
            if (c->st != C_FREE && c->deadline < t) hs_fail(c, &r, "a step timed out"), active--;
            if (c->st == C_FREE && started < count && t < deadline) {
                c->t0 = t;
                started++;
                if (conn_start(c) < 0) {
                    note_error("socket or connect failed");
                    r.errors++;
                }
                else active++;
            }
        }
        if (active == 0) break;
        if (t >= hard) {
            r.timed_out = 1;
            for (long i = 0; i < NCONN; i++)
                if (CONNS[i].st != C_FREE) conn_close(&CONNS[i]);
            break;
        }
        int k = epoll_wait(EP, EVS, 1024, 100);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int e = 0; e < k; e++) {
            struct conn *c = EVS[e].data.ptr;
            if (c->st == C_CONNECTING) {
                if (conn_send_request(c) < 0) hs_fail(c, &r, "connect failed"), active--;
                continue;
            }
            if (c->st == C_RESPONSE) {
                int x = conn_read_response(c, &why);
                if (x < 0) { hs_fail(c, &r, why), active--; continue; }
                if (x == 0) continue;
                if (send_close(c) < 0) { hs_fail(c, &r, "sending the close frame failed"), active--; continue; }
                c->st = C_CLOSING;
                c->deadline = now_s() + O.connect_timeout;
                if (c->rlen == 0) continue; /* else the server's close may be here already */
            } else if (c->st == C_CLOSING || c->st == C_EOF_WAIT) {
                if (c->rlen >= RBUF - 1) { hs_fail(c, &r, "too much data before the close frame"), active--; continue; }
                ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen, 0);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (n < 0) { hs_fail(c, &r, "connection reset"), active--; continue; }
                if (n == 0 && c->st == C_CLOSING) { hs_fail(c, &r, "closed without a close frame"), active--; continue; }
                if (n == 0) { /* the server closed the TCP connection: a cycle done */
                    conn_close(c);
                    active--;
                    double t1 = now_s();
                    r.last = t1;
                    if (r.done < cap) r.times[r.done] = (t1 - c->t0) * 1e6;
                    r.done++;
                    continue;
                }
                if (c->st == C_EOF_WAIT) continue; /* after the close frame: ignored, as ws does */
                c->rlen += (size_t)n;
            }
            /* C_CLOSING: look for the server's close frame */
            int op, closed = 0;
            const char *bad = NULL;
            const unsigned char *pl;
            size_t plen;
            long fk;
            while ((fk = frame_at(c->rbuf, c->rlen, &op, &pl, &plen)) != 0) {
                if (fk < 0) { bad = "a frame that is not valid"; break; }
                if ((op & 0x0f) == 0x8) {
                    int code = plen >= 2 ? (pl[0] << 8 | pl[1]) : 1005;
                    static char code_msg[48];
                    snprintf(code_msg, sizeof code_msg, "close code %d, not 1000", code);
                    if (code != 1000 && code != 1005) bad = code_msg;
                    closed = 1;
                    consume(c, fk);
                    break;
                }
                consume(c, fk); /* data or ping before the close: passed over */
            }
            if (bad) { hs_fail(c, &r, bad), active--; continue; }
            if (closed) {
                /* Bytes after the server's close frame are ignored, as ws does
                 * (flask-sock's Werkzeug writes an HTTP response there). */
                c->rlen = 0;
                shutdown(c->fd, SHUT_WR);
                c->st = C_EOF_WAIT;
            }
        }
    }
    return r;
}

static void run_handshake(void) {
    NCONN = O.parallel;
    CONNS = calloc((size_t)NCONN, sizeof *CONNS);
    unsigned char *bufs = malloc((size_t)NCONN * RBUF);
    if (!CONNS || !bufs) die("out of memory");
    for (long i = 0; i < NCONN; i++) {
        CONNS[i].fd = -1;
        CONNS[i].idx = (int)i;
        CONNS[i].rbuf = bufs + i * RBUF;
    }
    if (O.warmup > 0) {
        struct hs_result w = handshake_phase(O.warmup, now_s() + (O.duration < 5 ? O.duration : 5), 0);
        free(w.times);
    }
    emit("{\"event\":\"measure_start\"}");
    double cpu0 = cpu_s(), t0 = now_s();
    FIRST_ERROR[0] = 0; /* the measured phase's own */
    struct hs_result r = handshake_phase(O.count, t0 + O.duration, O.count);
    double wall = (r.done ? r.last : now_s()) - t0; /* none done: the phase's length */
    double cpu = cpu_s() - cpu0;
    emit("{\"event\":\"measure_end\"}");
    long nt = r.done < O.count ? r.done : O.count;
    qsort(r.times, (size_t)nt, sizeof(double), cmp_double);
    static char out[4096];
    char *p = out;
    p += sprintf(p, "{\"event\":\"result\",\"generator\":\"wsgen (C)\",\"scenario\":\"handshake\"");
    jint(&p, "parallel", O.parallel);
    jint(&p, "handshakes", r.done);
    jint(&p, "errors", r.errors);
    jbool(&p, "timed_out", r.timed_out);
    jbool(&p, "truncated_by_deadline", r.done + r.errors < O.count);
    jnum(&p, "wall_s", wall);
    jnum(&p, "handshakes_per_s", (double)r.done / wall);
    if (FIRST_ERROR[0]) p += sprintf(p, ",\"first_error\":\"%s\"", FIRST_ERROR);
    if (nt > 0)
        p += sprintf(p, ",\"latency\":{\"p50_us\":%.10g,\"p99_us\":%.10g,\"max_us\":%.10g}",
                     percentile(r.times, nt, 50), percentile(r.times, nt, 99), r.times[nt - 1]);
    else
        p += sprintf(p, ",\"latency\":null");
    jnull_or(&p, "loadgen_cpu_us_per_handshake", r.done > 0, r.done ? cpu * 1e6 / (double)r.done : 0);
    jnum(&p, "loadgen_cpu_s", cpu);
    jnum(&p, "loadgen_cpu_frac", cpu / wall);
    strcpy(p, "}");
    emit(out);
    free(r.times);
}

/* --------------------------------------------------------------- echo ---- */
/*
 * Each connection sends `count` binary messages of `size` bytes, keeping up to
 * `window` in flight, and stops sending when the deadline passes; the phase
 * ends when every message sent has come back (or 5 s after the deadline).
 * Every message is the same frame, built and masked once (random non-zero
 * key): the server still unmasks every byte. The frames queued while one
 * chunk of replies is handled go out in one send(). Replies are read raw: the
 * generator walks the frame headers and checks each data frame with FIN set
 * (0x82 and the payload length); control frames are passed over. With one
 * connection, the round trip of every message is recorded.
 */

struct echo_state {
    long sent, recv, pending; /* pending: queued, not yet written */
    size_t out_off;           /* bytes of the next frame already written */
    int done, want_out;
    unsigned char hdr[10];    /* reply parser */
    int hdr_len, hdr_need, in_payload;
    unsigned char first;
    uint64_t len, left;
};

struct echo_result {
    long long sent, recv, errors;
    uint64_t bytes;
    double last_recv;
    int timed_out;
    double *rtts;
    long nrtt;
};

static struct echo_state *ES;
static unsigned char *OUTBUF; /* the frame, OUT_REPS times */
static size_t OUT_REPS, FRAME_LEN;
static double *STAMPS; /* send times of the messages in flight (one connection) */
static long STAMP_CAP, STAMP_HEAD, STAMP_TAIL;

static void build_echo_frame(void) {
    size_t len = (size_t)O.size, h = len >= 65536 ? 10 : len > 125 ? 4 : 2;
    FRAME_LEN = h + 4 + len;
    OUT_REPS = 65536 / FRAME_LEN;
    if (OUT_REPS > (size_t)O.window) OUT_REPS = (size_t)O.window;
    if (OUT_REPS < 1) OUT_REPS = 1;
    OUTBUF = malloc(FRAME_LEN * OUT_REPS);
    if (!OUTBUF) die("out of memory");
    unsigned char *f = OUTBUF;
    f[0] = 0x82;
    if (h == 10) {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) f[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    } else if (h == 4) {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(len >> 8);
        f[3] = (unsigned char)len;
    } else {
        f[1] = (unsigned char)(0x80 | len);
    }
    uint32_t key;
    do key = rnd32(); while (!key);
    memcpy(f + h, &key, 4);
    for (size_t i = 0; i < len; i++) f[h + 4 + i] = 0x61 ^ f[h + (i & 3)];
    for (size_t r = 1; r < OUT_REPS; r++) memcpy(OUTBUF + r * FRAME_LEN, OUTBUF, FRAME_LEN);
}

/* Writes what `c` has queued; arms EPOLLOUT while the socket is full. */
static int echo_flush(struct conn *c, struct echo_state *e) {
    while (e->pending > 0) {
        size_t total = (size_t)e->pending * FRAME_LEN - e->out_off;
        size_t room = OUT_REPS * FRAME_LEN - e->out_off;
        ssize_t n = send(c->fd, OUTBUF + e->out_off, total < room ? total : room, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            break;
        }
        size_t done = e->out_off + (size_t)n;
        e->pending -= (long)(done / FRAME_LEN);
        e->out_off = done % FRAME_LEN;
    }
    int want = e->pending > 0;
    if (want != e->want_out) {
        ep_set(c, want ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
        e->want_out = want;
    }
    return 0;
}

static void echo_send_one(struct echo_state *e, struct echo_result *r, int record) {
    if (record) {
        STAMPS[STAMP_TAIL] = now_s();
        STAMP_TAIL = (STAMP_TAIL + 1) % STAMP_CAP;
    }
    e->sent++;
    r->sent++;
    e->pending++;
}

static struct echo_result echo_phase(long per_conn, double deadline, int record) {
    struct echo_result r;
    memset(&r, 0, sizeof r);
    r.last_recv = now_s();
    long cap = record ? per_conn : 0, done_conns = 0;
    r.rtts = malloc((size_t)(cap > 0 ? cap : 1) * sizeof(double));
    if (!r.rtts) die("out of memory");
    STAMP_HEAD = STAMP_TAIL = 0;
    double hard = deadline + 5.0;
    for (long i = 0; i < NCONN; i++) {
        struct echo_state *e = &ES[i];
        e->sent = e->recv = 0;
        e->done = 0;
        long initial = O.window < per_conn ? O.window : per_conn;
        for (long k = 0; k < initial; k++) echo_send_one(e, &r, record);
        if (initial == 0) {
            e->done = 1;
            done_conns++;
        } else if (echo_flush(&CONNS[i], e) < 0) {
            die("connection %ld: send failed: %s", i + 1, strerror(errno));
        }
    }
    while (done_conns < NCONN) {
        double t = now_s();
        if (t >= hard) {
            r.timed_out = 1;
            break;
        }
        int k = epoll_wait(EP, EVS, 1024, (int)((hard - t) * 1000) + 1);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        t = now_s();
        for (int ev = 0; ev < k; ev++) {
            struct conn *c = EVS[ev].data.ptr;
            struct echo_state *e = &ES[c->idx];
            if (c->fd < 0) continue;
            if (EVS[ev].events & EPOLLIN) {
                ssize_t got = recv(c->fd, RXBUF, sizeof RXBUF, 0);
                if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) {
                    /* closed or failed: its missing replies are errors */
                    conn_close(c);
                    r.timed_out = 1;
                    if (!e->done) {
                        e->done = 1;
                        done_conns++;
                    }
                    continue;
                }
                for (ssize_t i = 0; i < got;) {
                    if (!e->in_payload) {
                        while (e->hdr_len < e->hdr_need && i < got) e->hdr[e->hdr_len++] = RXBUF[i++];
                        if (e->hdr_len < e->hdr_need) break;
                        if (e->hdr_need == 2) {
                            int len7 = e->hdr[1] & 0x7f;
                            e->hdr_need = len7 == 127 ? 10 : len7 == 126 ? 4 : 2;
                            if (e->hdr_len < e->hdr_need) continue;
                        }
                        int len7 = e->hdr[1] & 0x7f;
                        uint64_t len = len7;
                        if (len7 == 126) len = (uint64_t)e->hdr[2] << 8 | e->hdr[3];
                        else if (len7 == 127)
                            for (int b = 0; b < 8; b++) len = (b ? len << 8 : 0) | e->hdr[2 + b];
                        e->first = e->hdr[0];
                        e->len = e->left = len;
                        e->in_payload = 1;
                    } else {
                        uint64_t avail = (uint64_t)(got - i);
                        uint64_t take = e->left < avail ? e->left : avail;
                        i += (ssize_t)take;
                        e->left -= take;
                    }
                    if (e->in_payload && e->left == 0) { /* a whole frame */
                        e->in_payload = 0;
                        e->hdr_len = 0;
                        e->hdr_need = 2;
                        if ((e->first & 0x0f) >= 8 || !(e->first & 0x80)) continue;
                        e->recv++;
                        r.recv++;
                        r.last_recv = t;
                        r.bytes += e->len;
                        if (e->len != (uint64_t)O.size || e->first != 0x82) r.errors++;
                        if (record && STAMP_HEAD != STAMP_TAIL) {
                            if (r.nrtt < cap) r.rtts[r.nrtt++] = (now_s() - STAMPS[STAMP_HEAD]) * 1e6;
                            STAMP_HEAD = (STAMP_HEAD + 1) % STAMP_CAP;
                        }
                        int stop = e->sent >= per_conn || t >= deadline;
                        if (!stop) echo_send_one(e, &r, record);
                        else if (e->recv >= e->sent && !e->done) {
                            e->done = 1;
                            done_conns++;
                        }
                    }
                }
            }
            if (c->fd >= 0 && (e->pending > 0 || e->want_out) && echo_flush(c, e) < 0) {
                conn_close(c);
                r.timed_out = 1;
                if (!e->done) {
                    e->done = 1;
                    done_conns++;
                }
            }
        }
    }
    return r;
}

static void run_echo(void) {
    if (O.deflate) die("permessage-deflate: use loadgen.mjs");
    NCONN = O.connections;
    if (NCONN < 1) die("--connections must be >= 1");
    if (O.size < 0 || O.size > (64L << 20)) die("--size must be 0..64 MiB");
    CONNS = calloc((size_t)NCONN, sizeof *CONNS);
    ES = calloc((size_t)NCONN, sizeof *ES);
    unsigned char *bufs = malloc((size_t)NCONN * RBUF);
    if (!CONNS || !ES || !bufs) die("out of memory");
    for (long i = 0; i < NCONN; i++) {
        CONNS[i].fd = -1;
        CONNS[i].idx = (int)i;
        CONNS[i].rbuf = bufs + i * RBUF;
        ES[i].hdr_need = 2;
    }
    build_echo_frame();
    STAMP_CAP = O.window + 1;
    STAMPS = malloc((size_t)STAMP_CAP * sizeof(double));
    if (!STAMPS) die("out of memory");
    double tc = now_s();
    connect_all(NCONN);
    double connect_s = now_s() - tc;
    for (long i = 0; i < NCONN; i++)
        if (CONNS[i].rlen) die("connection %ld: unexpected data after the handshake", i + 1);

    long long warmup_errors = 0;
    if (O.warmup > 0) {
        struct echo_result w = echo_phase(O.warmup, now_s() + (O.duration < 5 ? O.duration : 5), 0);
        warmup_errors = w.errors + (w.sent - w.recv);
        free(w.rtts);
    }
    emit("{\"event\":\"measure_start\"}");
    double cpu0 = cpu_s(), t0 = now_s();
    int record = NCONN == 1;
    struct echo_result r = echo_phase(O.count, t0 + O.duration, record);
    double wall = r.last_recv - t0;
    double cpu = cpu_s() - cpu0;
    emit("{\"event\":\"measure_end\"}");
    close_all();

    static char out[4096];
    char *p = out;
    p += sprintf(p, "{\"event\":\"result\",\"generator\":\"wsgen (C)\",\"scenario\":\"echo\"");
    jint(&p, "connections", NCONN);
    jint(&p, "size", O.size);
    jint(&p, "window", O.window);
    p += sprintf(p, ",\"deflate\":false");
    jint(&p, "frame_bytes", (long long)FRAME_LEN);
    p += sprintf(p, ",\"receive_mode\":\"raw-socket\"");
    jnum(&p, "connect_s", connect_s);
    jint(&p, "sent", r.sent);
    jint(&p, "received", r.recv);
    jint(&p, "errors", r.errors + (r.sent - r.recv) + warmup_errors);
    jint(&p, "warmup_errors", warmup_errors);
    jbool(&p, "timed_out", r.timed_out);
    jbool(&p, "truncated_by_deadline", r.sent < O.count * NCONN);
    jnum(&p, "wall_s", wall);
    jnum(&p, "msgs_per_s", (double)r.recv / wall);
    jnum(&p, "mb_per_s", (double)r.bytes / wall / 1e6);
    if (r.nrtt > 0) {
        qsort(r.rtts, (size_t)r.nrtt, sizeof(double), cmp_double);
        double sum = 0;
        for (long i = 0; i < r.nrtt; i++) sum += r.rtts[i];
        p += sprintf(p,
                     ",\"latency\":{\"p50_us\":%.10g,\"p90_us\":%.10g,\"p99_us\":%.10g,"
                     "\"max_us\":%.10g,\"mean_us\":%.10g}",
                     percentile(r.rtts, r.nrtt, 50), percentile(r.rtts, r.nrtt, 90),
                     percentile(r.rtts, r.nrtt, 99), r.rtts[r.nrtt - 1], sum / (double)r.nrtt);
    } else {
        p += sprintf(p, ",\"latency\":null");
    }
    jnull_or(&p, "loadgen_cpu_us_per_message", r.recv > 0, r.recv ? cpu * 1e6 / (double)r.recv : 0);
    jnum(&p, "loadgen_cpu_s", cpu);
    jnum(&p, "loadgen_cpu_frac", cpu / wall);
    strcpy(p, "}");
    emit(out);
    free(r.rtts);
}

/* --------------------------------------------------------------- main ---- */

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "wsgen: global time limit reached\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    if (!O.url[0]) die("--url is required");
    parse_url(O.url);
    if (strcmp(O.scenario, "broadcast") != 0 && strcmp(O.scenario, "handshake") != 0 &&
        strcmp(O.scenario, "echo") != 0)
        die("unknown scenario %s (this generator does echo, broadcast and handshake)", O.scenario);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(O.duration * 3 + O.connect_timeout + 30));
    seed_rng();
    build_request_head();
    EP = epoll_create1(EPOLL_CLOEXEC);
    if (EP < 0) die("epoll_create1: %s", strerror(errno));
    if (!strcmp(O.scenario, "broadcast")) run_broadcast();
    else if (!strcmp(O.scenario, "echo")) run_echo();
    else run_handshake();
    return 0;
}
