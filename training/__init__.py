"""Training and evaluation of the embedded demo models, apart from serving.

``python -m training.digits`` trains the digits classifier ``dat_digits`` and
``python -m training.digits_detection`` the digits detector ``dat_digits_detector``; both
write the weights that ``models/weights/`` ships. Only ``models`` is imported from the
project, and the serving image does not include this package (``pip install .[train]``
brings what it needs beyond the server: scikit-learn's digits).
"""
