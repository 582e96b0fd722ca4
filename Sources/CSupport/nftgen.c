// The nftables ruleset generation of the calling process's network namespace, over netlink.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include "csupport.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

int airlock_nft_generation(uint32_t *generation, uint64_t *netns_cookie) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -1;
    // Which network namespace: generations start again at 1 in every new one (and when nf_tables is
    // loaded again), so a generation alone could repeat with different rules. The cookie is unique
    // for the boot and never reused (Linux 5.14).
    uint64_t cookie = 0;
    socklen_t clen = sizeof cookie;
    if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &clen) != 0 || clen != sizeof cookie || cookie == 0) {
        int e = errno ? errno : ENOPROTOOPT;
        close(fd);
        errno = e;
        return -1;
    }
    struct timeval tv = { .tv_sec = 2, .tv_usec = 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct { struct nlmsghdr nh; struct nfgenmsg g; } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg));
    req.nh.nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 0x61697231;  // "air1"
    req.g.nfgen_family = AF_UNSPEC;
    req.g.version = NFNETLINK_V0;
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    if (sendto(fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) { int e = errno; close(fd); errno = e; return -1; }
    char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    struct sockaddr_nl from;
    socklen_t flen = sizeof from;
    ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    int e = errno;
    close(fd);
    if (got < 0) { errno = e; return -1; }
    // Only the kernel (port 0) answers this socket's request.
    if (flen < sizeof from || from.nl_family != AF_NETLINK || from.nl_pid != 0) { errno = EPROTO; return -1; }
    int remaining = (int)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, remaining); h = NLMSG_NEXT(h, remaining)) {
        if (h->nlmsg_seq != req.nh.nlmsg_seq) continue;
        if (h->nlmsg_type == NLMSG_ERROR) {
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) { errno = EPROTO; return -1; }
            struct nlmsgerr *err = NLMSG_DATA(h);
            errno = err->error ? -err->error : EPROTO;
            return -1;
        }
        if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) continue;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) continue;
        size_t len = h->nlmsg_len - NLMSG_LENGTH(sizeof(struct nfgenmsg));
        struct nlattr *a = (struct nlattr *)((char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
        while (len >= sizeof(struct nlattr) && a->nla_len >= sizeof(struct nlattr) && a->nla_len <= len) {
            if ((a->nla_type & NLA_TYPE_MASK) == NFTA_GEN_ID && a->nla_len >= NLA_HDRLEN + sizeof(uint32_t)) {
                uint32_t v;
                memcpy(&v, (char *)a + NLA_HDRLEN, sizeof v);
                *generation = ntohl(v);
                *netns_cookie = cookie;
                return 0;
            }
            size_t step = NLA_ALIGN(a->nla_len);
            if (step > len) break;
            len -= step;
            a = (struct nlattr *)((char *)a + step);
        }
    }
    errno = EPROTO;
    return -1;
}
