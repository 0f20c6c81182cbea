/* A pod's `localhost` for every dynamically linked program run by `kubectl exec`: an LD_PRELOAD
 * shim around connect(2). Built and loaded by labs/embedded/runtime/pod_loopback.py, which says
 * why (and labs/embedded/runtime/network.py, what a pod's `localhost` is here).
 *
 * Every pod shares the host's loopback, so a pod's own ports sit at host ports. For a TCP socket
 * dialing a loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z):
 *   - a port of the pod's map (MESHLAB_POD_LOCALHOST, {"port": host port}) goes to its host
 *     port on 127.0.0.1 (::ffff:127.0.0.1 on an IPv6 socket);
 *   - a host port of that map, or a port of MESHLAB_POD_LOCALHOST_DIRECT ([port, ...]: the
 *     pod's HTTP proxy), is dialed as it is (curl's `connect-to` lines and the course's own
 *     programs already dialed the host port);
 *   - any other port is dialed at port 0 instead, which nothing can listen on: the kernel refuses
 *     it as a real pod's loopback refuses a port nobody listens on (ECONNREFUSED at once on a
 *     blocking socket, EINPROGRESS then SO_ERROR on a non-blocking one).
 * Other addresses, UDP (DNS), and sockets other than AF_INET/AF_INET6 are untouched. The map is
 * read once, when the library loads; a malformed one disables the shim with one message on
 * stderr. Linux (glibc, musl) only: macOS has no LD_PRELOAD.
 *
 * What it stands for: "Within a Pod, containers share an IP address and port space, and can find
 * each other via localhost" (https://kubernetes.io/docs/concepts/workloads/pods/#pod-networking).
 * How it is loaded: LD_PRELOAD in ld.so(8) (https://man7.org/linux/man-pages/man8/ld.so.8.html):
 * ignored by statically linked programs, and, with a slash in the path, by set-user-ID ones.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_PORTS 512

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static connect_fn real_connect;
static int active; /* the pod's map was read */
static int n_map, n_direct;
static unsigned short map_port[MAX_PORTS], map_host[MAX_PORTS], direct[MAX_PORTS];

/* --- a small JSON reader: an object of "port": port, or an array of ports ------------------ */

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* A port (1..65535) in decimal at *p, optionally quoted; NULL when there is none. */
static const char *read_port(const char *p, int quoted, unsigned short *out) {
    long value = 0;
    int digits = 0;
    p = skip_space(p);
    if (quoted && *p++ != '"') return NULL;
    while (*p >= '0' && *p <= '9' && digits < 6) {
        value = value * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || value < 1 || value > 65535) return NULL;
    if (quoted && *p++ != '"') return NULL;
    *out = (unsigned short)value;
    return p;
}

/* Reads `{"8080": 20001, ...}` (keys != NULL) or `[20002, ...]` into the arrays; 0 if malformed. */
static int read_ports(const char *p, unsigned short *keys, unsigned short *values, int *count) {
    char open = keys ? '{' : '[', close = keys ? '}' : ']';
    *count = 0;
    p = skip_space(p);
    if (*p++ != open) return 0;
    p = skip_space(p);
    if (*p == close) return *skip_space(p + 1) == '\0';
    for (;;) {
        if (*count == MAX_PORTS) return 0;
        if (keys) {
            if (!(p = read_port(p, 1, &keys[*count]))) return 0;
            p = skip_space(p);
            if (*p++ != ':') return 0;
        }
        if (!(p = read_port(p, 0, &values[*count]))) return 0;
        (*count)++;
        p = skip_space(p);
        if (*p == ',') { p++; continue; }
        if (*p++ != close) return 0;
        return *skip_space(p) == '\0';
    }
}

__attribute__((constructor)) static void load_pod_map(void) {
    const char *map = getenv("MESHLAB_POD_LOCALHOST");
    const char *direct_ports = getenv("MESHLAB_POD_LOCALHOST_DIRECT");
    real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    if (!map || !real_connect) return; /* not in a pod: the host's loopback */
    if (!read_ports(map, map_port, map_host, &n_map)) {
        fprintf(stderr, "meshlab pod-loopback: MESHLAB_POD_LOCALHOST=%.200s is not a JSON object "
                "of \"port\": host port; localhost is the host's in this process (the embedded "
                "cluster's runtime sets it: do not change it)\n", map);
        return;
    }
    if (direct_ports && !read_ports(direct_ports, NULL, direct, &n_direct)) {
        fprintf(stderr, "meshlab pod-loopback: MESHLAB_POD_LOCALHOST_DIRECT=%.200s is not a JSON "
                "array of ports; localhost is the host's in this process (the embedded "
                "cluster's runtime sets it: do not change it)\n", direct_ports);
        return;
    }
    active = 1;
}

/* --- connect ------------------------------------------------------------------------------ */

enum verdict { KEEP, REWRITE, REFUSE };

static enum verdict decide(unsigned short port, unsigned short *host) {
    int i;
    for (i = 0; i < n_map; i++)
        if (map_port[i] == port) { *host = map_host[i]; return REWRITE; }
    for (i = 0; i < n_map; i++)
        if (map_host[i] == port) return KEEP;
    for (i = 0; i < n_direct; i++)
        if (direct[i] == port) return KEEP;
    return REFUSE;
}

static int is_tcp(int fd) {
    int type = 0;
    socklen_t size = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_STREAM;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    unsigned short host = 0;
    if (!real_connect) { /* called before the constructor ran (another library's constructor) */
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
        if (!real_connect) { errno = ENOSYS; return -1; }
    }
    if (!active || !addr) return real_connect(fd, addr, len);
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in to;
        memcpy(&to, addr, sizeof to);
        if ((ntohl(to.sin_addr.s_addr) >> 24) != 127 || !is_tcp(fd))
            return real_connect(fd, addr, len);
        switch (decide(ntohs(to.sin_port), &host)) {
        case KEEP: return real_connect(fd, addr, len);
        case REWRITE:
            to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            to.sin_port = htons(host);
            break;
        case REFUSE: to.sin_port = 0; break;
        }
        return real_connect(fd, (const struct sockaddr *)&to, sizeof to);
    }
    if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 to;
        int v6only = 0;
        socklen_t size = sizeof v6only;
        memcpy(&to, addr, sizeof to);
        if (!(IN6_IS_ADDR_LOOPBACK(&to.sin6_addr)
              || (IN6_IS_ADDR_V4MAPPED(&to.sin6_addr) && to.sin6_addr.s6_addr[12] == 127))
            || !is_tcp(fd))
            return real_connect(fd, addr, len);
        switch (decide(ntohs(to.sin6_port), &host)) {
        case KEEP: return real_connect(fd, addr, len);
        case REWRITE:
            /* the host ports listen on 127.0.0.1: reach it as ::ffff:127.0.0.1 unless the socket
             * is IPv6-only, which then keeps its address */
            if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) == 0 && !v6only) {
                static const unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                         0, 0, 0xff, 0xff, 127, 0, 0, 1};
                memcpy(to.sin6_addr.s6_addr, mapped, sizeof mapped);
            }
            to.sin6_port = htons(host);
            break;
        case REFUSE: to.sin6_port = 0; break;
        }
        return real_connect(fd, (const struct sockaddr *)&to, sizeof to);
    }
    return real_connect(fd, addr, len);
}
