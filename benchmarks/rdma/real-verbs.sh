#!/usr/bin/env bash
# The RDMA path on real verbs, for a machine whose /sys/class/infiniband shows an ACTIVE port (none of this
# project's machines has one yet). Runs the RDMA tests that need no fault switches of the fake provider against the
# system's libibverbs (exporter and importer on the same port: the NIC loops back), then rdma_posting on the real
# provider. Needs JDK 17, Maven and libibverbs-dev; run from anywhere in the checkout. Exit 2: no active port.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
cd "$repo"
active=$(grep -l ACTIVE /sys/class/infiniband/*/ports/*/state 2>/dev/null | head -1 || true)
if [ -z "$active" ]; then
  echo "real-verbs: no ACTIVE port under /sys/class/infiniband: nothing to run"
  exit 2
fi
echo "real-verbs: $active ($(cat "$(dirname "$active")/link_layer" 2>/dev/null || echo unknown link layer))"
mvn -B -ntp -q install -DskipTests
# verbs.library.path empty: the tests load the system's libibverbs, not the fake.
mvn -B -ntp -pl kvmarket-rdma test -Dverbs.library.path= \
  -Dtest='QpChannelTest,RdmaTransportContractTest,RdmaTransportTest,RdmaPushTest,RdmaQueueShapesTest'
java -Xmx4g -cp benchmarks/target/kvmarket-benchmarks.jar io.kvmarket.transfer.rdma.RdmaPostingCost 200
