//go:build !linux

package safeio

// RenameNoReplace renames oldpath to newpath, failing with an error
// matching fs.ErrExist if newpath exists (os.Rename would replace it): a
// link and an unlink here.
func RenameNoReplace(oldpath, newpath string) error { return linkUnlink(oldpath, newpath) }
