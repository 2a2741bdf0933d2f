#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* record: seed u32, from[5] u32, to[5] u32, nwords u32, out u32 = 13 words = 52 bytes */
#define REC 52
#define NREC 40
SEC("xdp")
int csumtest(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
  for (int i = 0; i < NREC; i++) {
    __u32 *r = data + i * REC;
    if ((void *)(r + 13) > end) break;
    __u32 n = r[11];
    __u32 from[5], to[5];
    for (int j = 0; j < 5; j++) { from[j] = r[1 + j]; to[j] = r[6 + j]; }
    __s64 v;
    if (n == 1) v = bpf_csum_diff(from, 4, to, 4, r[0]);
    else if (n == 2) v = bpf_csum_diff(from, 8, to, 8, r[0]);
    else if (n == 4) v = bpf_csum_diff(from, 16, to, 16, r[0]);
    else v = bpf_csum_diff(from, 20, to, 20, r[0]);
    r[12] = (__u32)v;
  }
  return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
