"""Relaxation times and proton density of head tissues at 1.5 T and 3 T.

One table, used by the bundled sample, the phantom generator and the presets
(the FLAIR, STIR and double-IR inversion times are null points of these T1s).
Each row gives a typical value and the range reported in the literature; the
typical values sit inside the ranges of the sources below.

Sources (the letters appear in the ``src`` column):

W  Wansapura JP, Holland SK, Dunn RS, Ball WS. NMR relaxation times in the human
   brain at 3.0 tesla. J Magn Reson Imaging 1999;9:531-538.
S  Stanisz GJ, Odrobina EE, Pun J, et al. T1, T2 relaxation and magnetization
   transfer in tissue at 3T. Magn Reson Med 2005;54:507-512 (1.5 T and 3 T).
B  Bojorquez JZ, Bricq S, Acquitter C, et al. What are normal relaxation times of
   tissues at 3 T? Magn Reson Imaging 2017;35:69-80 (systematic review).
G  Gelman N, Ewing JR, Gorell JM, et al. Interregional variation of longitudinal
   relaxation rates in human brain at 3.0 T. Magn Reson Med 2001;45:71-79, and
   Gelman N, Gorell JM, Barker PB, et al. MR imaging of human brain at 3.0 T:
   transverse relaxation rates and relation to estimated iron content.
   Radiology 1999;210:759-767 (deep grey matter: pallidum < putamen < caudate).
L  Lu H, Clingman C, Golay X, van Zijl PCM. Determining the longitudinal
   relaxation time (T1) of blood at 3.0 Tesla. Magn Reson Med 2004;52:679-682.
O  Gold GE, Han E, Stainsby J, et al. Musculoskeletal MRI at 3.0 T: relaxation
   times and image contrast. AJR 2004;183:343-351 (fat, muscle at 1.5 T and 3 T).
P  Warntjes JBM, Leinhard OD, West J, Lundberg P. Rapid magnetic resonance
   quantification on the brain: optimization for clinical usage. Magn Reson Med
   2008;60:320-329 (SyMRI; proton density of brain tissues as fraction of water).
C  Spijkerman JM, Petersen ET, Hendrikse J, et al. T2 mapping of cerebrospinal
   fluid: 3 T versus 7 T. MAGMA 2018;31:415-424 (CSF T2 of about 1.5-2 s at 3 T).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["Relaxation", "TISSUES", "FIELD_STRENGTHS", "relaxation", "FREESURFER_TISSUE"]

FIELD_STRENGTHS = (1.5, 3.0)
DEFAULT_FIELD_T = 3.0  # the table the presets' null points and a default flair/stir TI come from


@dataclass(frozen=True)
class Relaxation:
    """Typical T1, T2 (ms) and PD (fraction of water) of a tissue, with literature ranges."""

    t1: float
    t2: float
    pd: float
    t1_range: Tuple[float, float]
    t2_range: Tuple[float, float]


# tissue              field  T1    T1 lo  T1 hi   T2    T2 lo T2 hi  PD    src
_TABLE = """
csf                   3.0   4000   3500   4500   2000   1400  2500  1.00  B,C
csf                   1.5   3800   3300   4500   2000   1400  2500  1.00  B,C
cerebral_wm           3.0    850    780   1100     75     55    85  0.69  W,S,B,P
cerebral_wm           1.5    650    560    900     80     65    95  0.69  S,P
cortex                3.0   1350   1280   1850     95     80   115  0.80  W,S,B,P
cortex                1.5   1100    950   1250    100     85   115  0.80  S,P
thalamus              3.0   1050    950   1250     75     60    90  0.76  G,B
thalamus              1.5    850    750   1000     80     65    95  0.76  G
caudate               3.0   1250   1100   1450     85     65    95  0.80  G,B
caudate               1.5   1000    900   1150     90     75   105  0.80  G
putamen               3.0   1150   1000   1350     75     55    85  0.79  G,B
putamen               1.5    950    850   1100     80     65    95  0.79  G
pallidum              3.0    900    750   1050     60     40    70  0.74  G,B
pallidum              1.5    750    650    850     70     55    80  0.74  G
hippocampus           3.0   1400   1250   1600    100     85   120  0.82  B
hippocampus           1.5   1150   1000   1300    105     90   125  0.82  B
amygdala              3.0   1400   1250   1600     95     80   115  0.81  B
amygdala              1.5   1150   1000   1300    100     85   120  0.81  B
accumbens             3.0   1300   1150   1500     90     70   105  0.80  G,B
accumbens             1.5   1050    950   1200     95     80   110  0.80  G
ventral_dc            3.0   1000    900   1200     75     60    90  0.75  G,B
ventral_dc            1.5    800    700    950     80     65    95  0.75  G
brainstem             3.0    950    850   1150     75     60    90  0.72  B
brainstem             1.5    780    680    900     80     65    95  0.72  B
cerebellum_cortex     3.0   1300   1200   1500     90     75   105  0.80  B
cerebellum_cortex     1.5   1050    950   1200     95     80   110  0.80  B
cerebellum_wm         3.0    850    780   1050     70     55    85  0.68  B
cerebellum_wm         1.5    650    560    850     75     60    90  0.68  B
wm_hypointensity      3.0   1100    950   1400    110     90   140  0.76  B
wm_hypointensity      1.5    850    750   1100    115     95   145  0.76  B
choroid_plexus        3.0   2000   1500   2500    200    120   300  0.90  B
choroid_plexus        1.5   1800   1400   2300    200    120   300  0.90  B
blood                 3.0   1650   1550   1750    150    100   250  0.85  L,S
blood                 1.5   1350   1250   1450    200    150   290  0.85  S
fat                   3.0    382    350    420     68     60    80  0.90  O
fat                   1.5    343    300    380     58     50    70  0.90  O
muscle                3.0   1412   1350   1500     50     40    55  0.70  O
muscle                1.5   1008    950   1100     44     35    50  0.70  O
bone                  3.0    300    200    400      1    0.5     2  0.05  B
bone                  1.5    250    150    350      1    0.5     2  0.05  B
"""


def _parse(table: str) -> Dict[str, Dict[float, Relaxation]]:
    tissues: Dict[str, Dict[float, Relaxation]] = {}
    for line in table.strip().splitlines():
        name, field, t1, t1lo, t1hi, t2, t2lo, t2hi, pd, _src = line.split()
        tissues.setdefault(name, {})[float(field)] = Relaxation(
            float(t1), float(t2), float(pd), (float(t1lo), float(t1hi)), (float(t2lo), float(t2hi))
        )
    return tissues


TISSUES: Dict[str, Dict[float, Relaxation]] = _parse(_TABLE)


def relaxation(tissue: str, field: float = DEFAULT_FIELD_T) -> Relaxation:
    """The table row of ``tissue`` at ``field`` tesla (1.5 or 3)."""
    try:
        return TISSUES[tissue][float(field)]
    except KeyError:
        raise KeyError(f"no relaxation values for {tissue!r} at {field} T; tissues: {', '.join(TISSUES)}") from None


# FreeSurfer aseg / aparc+aseg label -> tissue of the table (FreeSurferColorLUT numbering).
FREESURFER_TISSUE: Dict[int, str] = {
    2: "cerebral_wm", 41: "cerebral_wm", 251: "cerebral_wm", 252: "cerebral_wm", 253: "cerebral_wm",
    254: "cerebral_wm", 255: "cerebral_wm", 85: "cerebral_wm",
    3: "cortex", 42: "cortex", 80: "cortex",
    4: "csf", 5: "csf", 14: "csf", 15: "csf", 24: "csf", 43: "csf", 44: "csf",
    7: "cerebellum_wm", 46: "cerebellum_wm", 8: "cerebellum_cortex", 47: "cerebellum_cortex",
    10: "thalamus", 49: "thalamus", 11: "caudate", 50: "caudate", 12: "putamen", 51: "putamen",
    13: "pallidum", 52: "pallidum", 17: "hippocampus", 53: "hippocampus", 18: "amygdala", 54: "amygdala",
    26: "accumbens", 58: "accumbens", 28: "ventral_dc", 60: "ventral_dc", 16: "brainstem",
    30: "blood", 62: "blood", 31: "choroid_plexus", 63: "choroid_plexus", 77: "wm_hypointensity",
}
