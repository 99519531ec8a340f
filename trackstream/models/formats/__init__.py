"""Weight formats and file I/O: the one safe reader of torch / safetensors / JSON files and the shipped
folders' sha256 check (``files``), Wan DiT state dicts on disk (``checkpoint``) and their official /
diffusers names (``wan_formats``), and Wan release folders as downloaded (``release_folder``)."""
