// Which remote image URLs the server may fetch, and at which addresses (see remote-image.ts):
//
//   host in ALLOWED_IMAGE_DOMAINS (exact name)  -> fetched, whatever address it resolves to
//   any other host, with ALLOW_REMOTE_IMAGES    -> fetched only if every address it resolves
//                                                  to is public unicast
//   otherwise                                   -> refused
//
// "Public unicast" is ipaddr.js's `unicast` range: loopback, private (RFC 1918, unique local),
// link-local (169.254.169.254, the cloud metadata address, is one), carrier-grade NAT
// (100.100.100.200, Alibaba's), reserved, multicast, and the IPv6 forms that embed an IPv4
// address (mapped, 6to4, NAT64, Teredo) are all something else. Azure's platform address is
// public unicast, so it is listed by hand.

import ipaddr from 'ipaddr.js';

export interface RemoteImageSettings {
  /** ALLOW_REMOTE_IMAGES: any host whose addresses are all public. */
  allowAny: boolean;
  /** ALLOWED_IMAGE_DOMAINS: these exact host names (lower case, as URL.hostname spells them), any address. */
  allowedHosts: readonly string[];
}

const METADATA_ADDRESSES = new Set(['168.63.129.16']);

export type HostVerdict = { allowed: true; anyAddress: boolean } | { allowed: false; reason: string };

/** May URLs on `hostname` (URL.hostname: lower case, IPv6 in brackets) be fetched at all? */
export function hostVerdict(settings: RemoteImageSettings, hostname: string): HostVerdict {
  const name = hostname.replace(/\.$/, '');
  if (settings.allowedHosts.includes(name)) return { allowed: true, anyAddress: true };
  if (settings.allowAny) return { allowed: true, anyAddress: false };
  return {
    allowed: false,
    reason:
      settings.allowedHosts.length === 0
        ? 'this server does not fetch images from http(s) URLs; send the image inline as a data URL (data:image/jpeg;base64,...) or upload it with multipart/form-data'
        : `the host ${JSON.stringify(name)} is not one this server fetches images from`,
  };
}

/** Null when a non-allowlisted host may be reached at `address`, else why not ("a private address"). */
export function addressProblem(address: string): string | null {
  if (!ipaddr.isValid(address)) return 'not an IP address';
  const ip = ipaddr.process(address);
  const range = ip.range();
  if (range === 'unicast') return METADATA_ADDRESSES.has(ip.toString()) ? 'a cloud metadata address' : null;
  const names: Record<string, string> = {
    loopback: 'a loopback address',
    private: 'a private address',
    uniqueLocal: 'a private address',
    linkLocal: 'a link-local address (cloud metadata lives there)',
    carrierGradeNat: 'a carrier-grade NAT address',
    unspecified: 'an unspecified address',
  };
  return names[range] ?? `a ${range} address, not a public one`;
}

/** The bare address of a URL host that is an IP literal ("[::1]" -> "::1"), or null for a name. */
export function ipLiteral(hostname: string): string | null {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  return ipaddr.isValid(bare) && (bare.includes(':') || ipaddr.IPv4.isValidFourPartDecimal(bare)) ? bare : null;
}
