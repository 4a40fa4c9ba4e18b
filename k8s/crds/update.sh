#!/usr/bin/env bash
# Fetch the CRDs that `winnow deploy check kubernetes` validates custom resources against, from
# the package registries alone (see README.md beside this file):
#
#   KEDA:    the CRD YAMLs in KEDA's Go module (go mod download), copied as they are;
#   Strimzi: generated from Strimzi's released API jar by Strimzi's own CRD generator (both from
#            Maven Central), with the arguments Strimzi's api/pom.xml gives it for its release.
#
#   bash k8s/crds/update.sh [OUT_DIR]      # default: this folder
#
# Needs go, mvn and a Java 21+ runtime (the generator's class files are Java 21): JAVA=/path/to/java
# picks one; otherwise the first JDK 21+ under /usr/lib/jvm, else `java` on PATH.
set -euo pipefail

KEDA_VERSION=v2.21.0
STRIMZI_VERSION=1.2.0

here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# --- KEDA ---
go mod init winnow-crds >/dev/null 2>&1
keda=$(go mod download -json "github.com/kedacore/keda/v2@${KEDA_VERSION}" \
       | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
for kind in scaledobjects triggerauthentications; do
  install -m 644 "$keda/config/crd/bases/keda.sh_${kind}.yaml" "$out/keda-${kind}.yaml"
done

# --- Strimzi ---
cat > pom.xml <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.winnow</groupId><artifactId>strimzi-crds</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>${STRIMZI_VERSION}</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>${STRIMZI_VERSION}</version></dependency>
  </dependencies>
</project>
EOF
mvn -q dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
java=${JAVA:-}
if [ -z "$java" ]; then
  for candidate in /usr/lib/jvm/*-2[1-9]*/bin/java /usr/lib/jvm/*-[3-9][0-9]*/bin/java; do
    [ -x "$candidate" ] && { java=$candidate; break; }
  done
fi
java=${java:-java}
# the arguments of the CrdGenerator execution in io.strimzi:api:${STRIMZI_VERSION}'s pom.xml
"$java" -cp "lib/*" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  "io.strimzi.api.kafka.model.kafka.Kafka=$out/strimzi-kafka.yaml" \
  "io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$out/strimzi-kafkanodepool.yaml" \
  "io.strimzi.api.kafka.model.topic.KafkaTopic=$out/strimzi-kafkatopic.yaml"
chmod 644 "$out"/strimzi-*.yaml
echo "CRDs of KEDA ${KEDA_VERSION} and Strimzi ${STRIMZI_VERSION} written to $out"
