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

rm -rf .device/lib .device/test-classes .device/junit
mkdir -p .device/lib .device/test-classes .device/junit
mvn -q -B -DskipTests package
mvn -q -B -DskipTests test-compile
mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$repo/.device/lib"
find . -path ./.device -prune -o -path '*/target/*.jar' -print | grep -v -E 'sources|javadoc|original-' \
  | xargs -r -I{} cp {} .device/lib/
for m in kvmarket-native kvmarket-nvlink; do cp -r "$m/target/test-classes" ".device/test-classes/$m"; done
mvn -q -B dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4 \
  -DoutputDirectory="$repo/.device/junit" -Dmdep.stripVersion=true
du -sh .device
