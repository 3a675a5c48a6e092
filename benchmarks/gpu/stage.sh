#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for benchmarks/gpu/run.sh on a GPU machine that has no Java and no Maven:
# a small Java 17 runtime (jlink), every jar of the project with its runtime dependencies, the CUDA test classes
# and the JUnit console launcher. Run from anywhere in the checkout, on a machine with JDK 17 and Maven
# (and the CUDA headers, so that kvmarket-native builds its CUDA library). JDK=... picks another JDK 17.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
cd "$repo"
mkdir -p .device .git/info
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude

if [ ! -f .device/jre17.tgz ]; then
  jdk=${JDK:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}
  tmp=$(mktemp -d)
  "$jdk/bin/jlink" --add-modules java.base,jdk.unsupported,java.management,jdk.management,java.logging,java.naming,java.xml,jdk.zipfs,java.net.http,jdk.httpserver,java.sql \
    --strip-debug --no-header-files --no-man-pages --compress=2 --output "$tmp/kvm-jre17"
  tar czf .device/jre17.tgz -C "$tmp" kvm-jre17
  rm -rf "$tmp"
fi

rm -rf .device/lib .device/test-classes .device/junit .device/cudart
mkdir -p .device/lib .device/test-classes .device/junit
mvn -q -B -DskipTests package
mvn -q -B -DskipTests test-compile
mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$repo/.device/lib"
# The modules' own jars only (versioned names): the shaded demo and benchmark jars repeat what lib/ holds.
find . \( -path ./.device -o -path ./examples/jlama \) -prune -o -path '*/target/kvmarket-*-[0-9]*.jar' -print \
  | grep -v -E 'sources|javadoc' | xargs -r -I{} cp {} .device/lib/
for m in kvmarket-native kvmarket-nvlink; do cp -r "$m/target/test-classes" ".device/test-classes/$m"; done
mvn -q -B dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4 \
  -DoutputDirectory="$repo/.device/junit" -Dmdep.stripVersion=true
# The CUDA runtime the native copy was linked against, in case the GPU machine's is elsewhere: run.sh puts it on
# the library path after the machine's own.
if [ -e /usr/local/cuda/lib64/libcudart.so.13 ]; then
  mkdir -p .device/cudart
  cp -L /usr/local/cuda/lib64/libcudart.so.13 .device/cudart/
fi
du -sh .device
# The device tool carries at most 64 MiB with the working tree.
bytes=$(du -sb .device | cut -f1)
if [ "$bytes" -gt $((60 * 1024 * 1024)) ]; then
  echo "stage.sh: .device is $bytes bytes, over the 60 MiB left for it in the device tool's 64 MiB" >&2
  exit 1
fi
