#!/usr/bin/env bash
# System packages the test suite needs, installed only when missing (Debian/Ubuntu, as root or via sudo):
#   chromium + chromium-driver: headless browser that checks the drift HTML report renders;
#   openssh-server + openssh-client: a real sshd on loopback plays the board for `bench --device ssh://`;
#   strace: the "nothing leaves the machine" tests trace every connect() of a command, C++ code included;
#   qemu-user-static + mmdebstrap: the emulated arm64 board (qemu://pi5) that bench and drift --device
#   run on in the tests, prepared by bbdeploy itself from a Debian arm64 userland.
set -euo pipefail
needed=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || needed+=(chromium)
command -v chromedriver >/dev/null 2>&1 || needed+=(chromium-driver)
[ -x /usr/sbin/sshd ] || needed+=(openssh-server)
command -v ssh >/dev/null 2>&1 || needed+=(openssh-client)
command -v strace >/dev/null 2>&1 || needed+=(strace)
command -v qemu-aarch64-static >/dev/null 2>&1 || needed+=(qemu-user-static)
command -v mmdebstrap >/dev/null 2>&1 || needed+=(mmdebstrap arch-test)
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${needed[*]} and no apt-get here; install them with your package manager" >&2
    exit 2
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${needed[@]}"
