/* What the plugin needs from Slurm: the SPANK API and the release number. */
#include <slurm/spank.h>
#include <slurm/slurm_version.h>
