#!/bin/sh
# The management OS build script lives in the package (pxed/mgmtos/build.sh,
# installed with pxed); this keeps `mgmtos/build.sh OUTDIR` working from a
# clone.  Without OUTDIR it builds into mgmtos/out.
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../pxed/mgmtos/build.sh" "${1:-$here/out}"
