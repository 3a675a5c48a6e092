#!/usr/bin/env bash
# Prepares .device/ for benchmarks/gpu/run.sh: the JRE and runtime jars (shared/device/stage.sh), the CUDA test
# classes and the JUnit console launcher, so the GPU tests run where there is no Maven.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
cd "$repo"
"$repo/../shared/device/stage.sh"
mvn -q -B -DskipTests test-compile
rm -rf .device/test-classes .device/junit && mkdir -p .device/test-classes .device/junit
for m in kvmarket-native kvmarket-nvlink; do cp -r "$m/target/test-classes" ".device/test-classes/$m"; done
mvn -q -B dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4 \
  -DoutputDirectory="$repo/.device/junit" -Dmdep.stripVersion=true
du -sh .device
