# fish completion for dedupctl, generated from its parser by dedupd.cli.shellfiles
complete -c dedupctl -f
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a status -d 'state, roots, counts, index sizes, CNN, uptime'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a wait-idle -d 'return when nothing is pending'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a query -d 'near-duplicates of any file'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a duplicates -d 'current duplicate groups'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a to-remove -d 'files one would delete, keeping one per group'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a rescan -d 'reconcile the store with the disk (PATH, or every root)'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a pause -d 'stop encoding (changes are still queued)'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a resume -d 'resume encoding'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a reload -d 're-read the configuration'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a watch -d 'list, add or remove watched roots'
complete -c dedupctl -n '__fish_seen_subcommand_from watch; and not __fish_seen_subcommand_from list add remove' -a list -d 'the watched roots'
complete -c dedupctl -n '__fish_seen_subcommand_from watch; and not __fish_seen_subcommand_from list add remove' -a add -d 'add a watched root'
complete -c dedupctl -n '__fish_seen_subcommand_from watch; and not __fish_seen_subcommand_from list add remove' -a remove -d 'remove a watched root'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a export -d 'imagededup-format encodings {path: hex} of the whole index'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a needles -d 'which images of DIR (and which sub-folders, wholly) are in the library'
complete -c dedupctl -n 'not __fish_seen_subcommand_from status wait-idle query duplicates to-remove rescan pause resume reload watch export needles ignore' -a ignore -d 'mark files as not duplicates of each other; never reported again'
complete -c dedupctl -s h -l help -d 'show this help message and exit'
complete -c dedupctl -l version -d 'show program\'s version number and exit'
complete -c dedupctl -l json -d 'print the result as one JSON document'
complete -c dedupctl -l socket -rF -d 'control socket (default: $DEDUPD_SOCKET, then the config\'s `socket`, then the user/system default)'
complete -c dedupctl -l config -rF -d 'read the control socket from this dedupd config file (default: $DEDUPD_CONFIG, then the user/system config file)'
complete -c dedupctl -n '__fish_seen_subcommand_from wait-idle' -l timeout -x -d 'give up after S seconds (default 300)'
complete -c dedupctl -n '__fish_seen_subcommand_from query' -F
complete -c dedupctl -n '__fish_seen_subcommand_from query' -l method -xa 'exact phash ahash dhash whash cnn' -d 'only this method (default: the daemon\'s matcher)'
complete -c dedupctl -n '__fish_seen_subcommand_from query' -l threshold -x -d 'max hamming distance for hash methods (0-64)'
complete -c dedupctl -n '__fish_seen_subcommand_from query' -l min-similarity -x -d 'min cosine similarity for the CNN'
complete -c dedupctl -n '__fish_seen_subcommand_from query' -l explain -d 'also show each method\'s distance or similarity'
complete -c dedupctl -n '__fish_seen_subcommand_from duplicates' -l method -xa 'exact phash ahash dhash whash cnn' -d 'only this method (default: the daemon\'s matcher)'
complete -c dedupctl -n '__fish_seen_subcommand_from duplicates' -l under -rF -d 'only files under DIR'
complete -c dedupctl -n '__fish_seen_subcommand_from to-remove' -l method -xa 'exact phash ahash dhash whash cnn' -d 'only this method (default: the daemon\'s matcher)'
complete -c dedupctl -n '__fish_seen_subcommand_from to-remove' -l under -rF -d 'only files under DIR'
complete -c dedupctl -n '__fish_seen_subcommand_from to-remove' -s 0 -l null -d 'print the paths as their exact bytes, each ended by NUL (for xargs -0): right for every file name'
complete -c dedupctl -n '__fish_seen_subcommand_from rescan' -F
complete -c dedupctl -n '__fish_seen_subcommand_from add' -F
complete -c dedupctl -n '__fish_seen_subcommand_from remove' -F
complete -c dedupctl -n '__fish_seen_subcommand_from export' -l method -xa 'phash ahash dhash whash cnn' -d 'only this method (default: the daemon\'s matcher)'
complete -c dedupctl -n '__fish_seen_subcommand_from needles' -F
complete -c dedupctl -n '__fish_seen_subcommand_from ignore' -F
