/**
 * Ranks on other hosts: which peers are (`acrossHosts`) and how much each may have in
 * flight to this rank (`CROSS_HOST_WINDOW`, the receive window group.ts asks for when it
 * dials them).
 */

/**
 * The receive window of a stream from a rank on another host. A large all-reduce sends to
 * W-1 peers at once; across hosts those streams share each host's link, and with nothing
 * but TCP pacing them, whichever has the larger congestion window takes the link while the
 * others queue behind it (a switch or `tc` queue holds tens of milliseconds), so segments
 * finish at different times and the all-gather waits for the last. A bounded window keeps
 * every stream's bytes in flight equal, and the link's share with them. Measured
 * (bench:collective namespace mode, W=4, 16 MB, 1 Gbit/s links): unbounded 0.852-0.900
 * of the link rate (8 runs, p90 248-279 ms); 512 KiB 0.900-0.920 (5 runs, p90 229-236
 * ms); gloo 0.937-0.947 (docs/decisions/0004). On loopback or a Unix socket the same
 * window halves the throughput (the receiver's event loop, shared with the other ranks'
 * on few cores, gives the window back late), so peers on the same host are never bounded.
 */
export const CROSS_HOST_WINDOW = 512 << 10;

/** A TCP address on another host: neither `unix:` nor loopback. */
export function acrossHosts(address: string): boolean {
  if (address.startsWith('unix:')) return false;
  const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[(.*)\]$/u, '$1').toLowerCase();
  return !(host === 'localhost' || host === '::1' || /^(::ffff:)?127\./u.test(host));
}
