// zlib from the system (Debian: zlib1g-dev; macOS: the SDK). SluiceText inflates gzip files with it
// (open_clip's CLIP merges ship as bpe_simple_vocab_16e6.txt.gz); Foundation on Linux has no decoder.
#include <zlib.h>
