#!/usr/bin/env bash
# Regenerates the docs' example pictures (docs/images/) from a finished CIFAR-10 run folder.
#   bash benchmarks/readme_examples.sh runs/<a default-recipe run> ../shared/datasets/cifar10-jpeg.tar.gz
set -euo pipefail
run=${1:?run folder}
data=${2:?data path the run used}
out=docs/images
tmp=$(mktemp -d)
mkdir -p "$out"
cnnmode eval "$run"
cnnmode summary "$run" > "$out/summary.txt"
mkdir -p "$tmp/imgs"
python - "$data" "$tmp/imgs" <<'PY'
import sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
want = {f"cifar10/test/{c}/0007.jpg" for c in ("cat", "dog", "ship", "horse", "truck", "bird")}
with tarfile.open(src) as tar:
    for m in tar:
        if m.name in want:
            open(f"{dst}/{m.name.split('/')[2]}.jpg", "wb").write(tar.extractfile(m).read())
PY
cnnmode explain "$run" "$tmp/imgs" --method gradcam --features stages.0 --embedding --out "$tmp/explain"
cp "$run"/eval/{confusion_matrix_normalized,per_class_accuracy_all,top_confused_pairs,reliability_diagram,misclassified}.png "$out/"
cp "$run"/plots/{training_curves,predictions}.png "$out/"
cp "$tmp/explain/gradcam_000.png" "$out/gradcam.png"
cp "$tmp/explain/features_stages.0_cat.png" "$out/features.png"
cp "$tmp/explain/embedding_pca.png" "$out/embedding_pca.png"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --no-first-run --hide-scrollbars --user-data-dir="$tmp/profile" --window-size=1280,1800 \
  --screenshot="$out/report.png" "file://$(realpath "$run")/report.html" 2>/dev/null
rm -rf "$tmp"
ls -la "$out"
